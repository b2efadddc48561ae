package main

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/version"
	kubeversion "k8s.io/component-base/version"
)

func printVersions() {
	fmt.Printf("kubernetes %s\netcd %s\n", kubeversion.Get().GitVersion, version.Version)
}
