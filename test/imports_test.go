// Package test holds repository-wide checks; the end-to-end tests live in
// its subdirectories.
package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const module = "github.com/gorovod/gorovod/"

// known are violations owned by work in progress, each with who removes
// it. Any other violation fails.
var known = map[string]string{
	"internal/sysinfo -> nccl": "the GPU work (issue 11) moves the GPU probe next to gorun",
}

// packages lists every package of the module with its direct imports.
func packages(t *testing.T) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], module) {
			continue
		}
		var own []string
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module) {
				own = append(own, strings.TrimPrefix(imp, module))
			}
		}
		pkgs[strings.TrimPrefix(f[0], module)] = own
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages of the module", len(pkgs))
	}
	return pkgs
}

// TestImportRules checks the layering: nothing under internal/ imports a
// package outside internal/ (the arrows point down), and the coordinator
// (negotiation as a pure state machine) imports nothing that moves data.
func TestImportRules(t *testing.T) {
	pkgs := packages(t)
	for pkg, imps := range pkgs {
		for _, imp := range imps {
			edge := pkg + " -> " + imp
			if _, ok := known[edge]; ok {
				continue
			}
			if strings.HasPrefix(pkg, "internal/") && !strings.HasPrefix(imp, "internal/") {
				t.Errorf("%s: a package under internal/ imports a top-level package", edge)
			}
			if pkg == "coordinator" || strings.HasPrefix(pkg, "coordinator/") {
				for _, data := range []string{"ops", "fusion", "nccl", "collective", "internal/transport"} {
					if imp == data || strings.HasPrefix(imp, data+"/") {
						t.Errorf("%s: the coordinator imports a package that moves data", edge)
					}
				}
			}
		}
	}
	for edge, why := range known {
		pkg, imp, _ := strings.Cut(edge, " -> ")
		found := false
		for _, i := range pkgs[pkg] {
			found = found || i == imp
		}
		if !found {
			t.Errorf("%s is gone (%s): remove it from the known violations", edge, why)
		}
	}
}
