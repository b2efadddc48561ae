// Command labpod is the one small static binary the lab's images and nodes
// need, with no registry to pull from:
//
//	labpod pause          the pod sandbox's process: waits for a signal
//	labpod web [port]     an HTTP server (both families) answering every
//	                      request with the pod's name, so a client sees which
//	                      backend pod a load-balanced request reached
//	labpod runc <args>    runs /usr/sbin/runc with <args>, first clamping a
//	                      negative process.oomScoreAdj in the bundle's
//	                      config.json to 0 (see clampOOMScoreAdj)
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labpod pause | web [port] | runc <args>")
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
	case "runc":
		if err := runc(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "labpod runc:", err)
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

// runc is the lab's OCI runtime wrapper. The kubelet asks for a negative
// oom_score_adj for pod sandboxes and guaranteed containers; setting one
// needs CAP_SYS_RESOURCE, which root lacks on the lab's machine, and runc
// then fails to start the container. Clamping to 0 changes nothing else.
func runc(args []string) error {
	for i, arg := range args {
		if arg == "create" || arg == "run" {
			if bundle := bundleDir(args[i+1:]); bundle != "" {
				if err := clampOOMScoreAdj(filepath.Join(bundle, "config.json")); err != nil {
					return err
				}
			}
			break
		}
	}
	argv := append([]string{"runc"}, args...)
	return syscall.Exec("/usr/sbin/runc", argv, os.Environ())
}

// bundleDir finds `--bundle DIR`, `--bundle=DIR` or `-b DIR`.
func bundleDir(args []string) string {
	for i, arg := range args {
		switch {
		case (arg == "--bundle" || arg == "-b") && i+1 < len(args):
			return args[i+1]
		case len(arg) > 9 && arg[:9] == "--bundle=":
			return arg[9:]
		}
	}
	return ""
}

func clampOOMScoreAdj(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var process map[string]json.RawMessage
	if raw, ok := spec["process"]; !ok || json.Unmarshal(raw, &process) != nil {
		return nil
	}
	var adj int
	if raw, ok := process["oomScoreAdj"]; !ok || json.Unmarshal(raw, &adj) != nil || adj >= 0 {
		return nil
	}
	process["oomScoreAdj"] = json.RawMessage("0")
	if spec["process"], err = json.Marshal(process); err != nil {
		return err
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
