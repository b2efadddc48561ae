// Command kubeenv runs the pieces of a real Kubernetes control plane for tests:
// etcd, kube-apiserver, kube-controller-manager and kubectl, each as its own
// process (apiserver and controller-manager share process-global state).
package main

import (
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
)

const usage = `usage: kubeenv <command> [flags]

commands:
  certs <dir>           write a CA, a serving certificate for 127.0.0.1 and service-account keys
  etcd <flags>          run an embedded etcd (see etcd.go for flags)
  apiserver <flags>     run kube-apiserver
  controller-manager    run kube-controller-manager
  kubectl <args>        run kubectl
  version               print the Kubernetes and etcd versions built in

etcd, apiserver and controller-manager exit when their standard input reaches
end of file, so a test run that dies leaves no process behind.
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
		if len(args) != 1 {
			fmt.Fprintln(os.Stderr, "usage: kubeenv certs <dir>")
			os.Exit(2)
		}
		if err := writeCerts(args[0]); err != nil {
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
