// Command kubeenv runs the pieces of a real Kubernetes cluster for tests:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
// kube-proxy and kubectl, each as its own process (they share process-global
// state and clash in one process).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	_ "time/tzdata" // as the upstream mains: time zone data for CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = `usage: kubeenv <command> [flags]

commands:
  certs <dir> [san...]  write a CA, a serving certificate (127.0.0.1, localhost, the
                        kubernetes Service names, and each extra IP or DNS name given)
                        and service-account keys
  etcd <flags>          run an embedded etcd (see etcd.go for flags)
  apiserver <flags>     run kube-apiserver
  controller-manager    run kube-controller-manager
  scheduler <flags>     run kube-scheduler
  kubelet <flags>       run the kubelet
  proxy <flags>         run kube-proxy
  kubectl <args>        run kubectl
  version               print the Kubernetes and etcd versions built in

Every long-running command exits when its standard input reaches end of file,
so a test run that dies leaves no process behind.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	// cobra commands read os.Args[1:], so drop the subcommand name.
	os.Args = append([]string{"kubeenv-" + cmd}, args...)
	switch cmd {
	case "certs":
		if len(args) < 1 {
			fmt.Fprintln(os.Stderr, "usage: kubeenv certs <dir> [san...]")
			os.Exit(2)
		}
		if err := writeCerts(args[0], args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "certs:", err)
			os.Exit(1)
		}
	case "etcd":
		exitOnStdinEOF()
		if err := runEtcd(args); err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(1)
		}
	case "apiserver":
		exitOnStdinEOF()
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "controller-manager":
		exitOnStdinEOF()
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "scheduler":
		exitOnStdinEOF()
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubelet":
		exitOnStdinEOF()
		if err := cli.RunNoErrOutput(kubelet.NewKubeletCommand(context.Background())); err != nil {
			fmt.Fprintln(os.Stderr, "kubelet:", err)
			os.Exit(1)
		}
	case "proxy":
		exitOnStdinEOF()
		os.Exit(cli.Run(proxy.NewProxyCommand()))
	case "kubectl":
		os.Exit(cli.Run(kubectl.NewDefaultKubectlCommand()))
	case "version":
		printVersions()
	default:
		fmt.Fprintf(os.Stderr, "kubeenv: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}

// exitOnStdinEOF ends the process when the parent closes our standard input,
// which the kernel does for us when the parent dies for any reason.
func exitOnStdinEOF() {
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
}
