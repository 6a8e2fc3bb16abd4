package main

import (
	"flag"
	"fmt"
	"os"
)

// Usage: go run . -f manifests.yaml (or MANIFESTS=manifests.yaml go run .), where the
// file is `helm template` output. Exits 1 with every problem on stderr.
func main() {
	path := flag.String("f", os.Getenv("MANIFESTS"), "multi-document YAML to check (default $MANIFESTS)")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "k8scheck: no manifests: pass -f FILE or set MANIFESTS")
		os.Exit(2)
	}
	f, err := os.Open(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "k8scheck: %v\n", err)
		os.Exit(2)
	}
	defer f.Close()
	objects, err := Decode(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "k8scheck: %s: strict decoding failed:\n%v\n", *path, err)
		os.Exit(1)
	}
	if len(objects) == 0 {
		fmt.Fprintf(os.Stderr, "k8scheck: %s holds no manifests\n", *path)
		os.Exit(1)
	}
	if problems := Check(objects); len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "k8scheck: %s:\n", *path)
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
		}
		os.Exit(1)
	}
	for _, o := range objects {
		fmt.Printf("ok %s/%s\n", o.Kind, o.Name)
	}
}
