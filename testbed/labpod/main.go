// Command labpod is the one small static binary the lab's images and nodes
// need, with no registry to pull from:
//
//	labpod pause          the pod sandbox's process: waits for a signal
//	labpod web [port]     an HTTP server (both families) answering every
//	                      request with the pod's name, so a client sees which
//	                      backend pod a load-balanced request reached
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labpod pause | web [port]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "web":
		port := "8080"
		if len(os.Args) > 2 {
			port = os.Args[2]
		}
		if err := web(port); err != nil {
			fmt.Fprintln(os.Stderr, "web:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "labpod: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// pause blocks until SIGTERM or SIGINT, as the sandbox's pause process does.
func pause() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}

func web(port string) error {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	node := os.Getenv("NODE_NAME")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "pod=%s node=%s client=%s\n", name, node, r.RemoteAddr)
	})
	// One listener on [::] takes IPv4 too (IPv4-mapped), unless the kernel
	// is set to v6only; "tcp" in Go asks for dual-stack.
	listener, err := net.Listen("tcp", net.JoinHostPort("", port))
	if err != nil {
		return err
	}
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		os.Exit(0)
	}()
	return http.Serve(listener, handler)
}
