// Package arch checks the import rules of the module with `go list`: the
// arrows between packages run one way, downwards.
package arch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"
	"time"
)

const module = "github.com/gorovod/gorovod"

// pkg is what `go list -json` says of one package (the fields used here).
type pkg struct {
	ImportPath string
	Imports    []string // non-test imports
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// rel is a package's path inside the module ("" for non-module paths).
func rel(importPath string) (string, bool) {
	if importPath == module {
		return ".", true
	}
	r, ok := strings.CutPrefix(importPath, module+"/")
	return r, ok
}

// isInternal reports whether a module-relative path is under some internal/.
func isInternal(r string) bool {
	return strings.HasPrefix(r, "internal/") || strings.Contains(r, "/internal/") || r == "internal"
}

func moduleImports(p pkg) []string {
	var out []string
	for _, imp := range p.Imports {
		if r, ok := rel(imp); ok {
			out = append(out, r)
		}
	}
	return out
}

func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	var broken []string
	fail := func(format string, a ...any) {
		broken = append(broken, strings.TrimSpace(fmt.Sprintf(format, a...)))
	}
	importers := map[string][]string{}
	for _, p := range pkgs {
		from, _ := rel(p.ImportPath)
		for _, to := range moduleImports(p) {
			importers[to] = append(importers[to], from)
			// Nothing under internal/ imports a package outside internal/
			// (no arrow runs back up), except the test programs' helpers.
			if isInternal(from) && !isInternal(to) {
				fail("%s (internal) imports %s, a package above it", from, to)
			}
		}
	}
	// The vocabulary imports nothing of the project.
	if imps := moduleImports(pkgs[module+"/internal/tensor"]); len(imps) > 0 {
		fail("internal/tensor imports %v; it must be a leaf", imps)
	}
	// The coordinator is a pure state machine: nothing that moves data.
	for _, to := range moduleImports(pkgs[module+"/coordinator"]) {
		for _, data := range []string{"ops", "fusion", "nccl", "collective", "internal/transport"} {
			if to == data || strings.HasPrefix(to, data+"/") {
				fail("coordinator imports %s, which moves data", to)
			}
		}
	}
	// A package used by one command lives with it.
	for to, from := range importers {
		if !strings.HasPrefix(to, "internal/") {
			continue
		}
		cmds := map[string]bool{}
		other := false
		for _, f := range from {
			if c, ok := commandOf(f); ok {
				cmds[c] = true
			} else {
				other = true
			}
		}
		if !other && len(cmds) == 1 {
			for c := range cmds {
				fail("%s is used only by %s: move it to %s/internal/%s", to, c, c, path.Base(to))
			}
		}
	}
	sort.Strings(broken)
	for _, b := range broken {
		t.Error(b)
	}
}

// commandOf returns cmd/<name> when r is that command or a package under it.
func commandOf(r string) (string, bool) {
	parts := strings.Split(r, "/")
	if len(parts) >= 2 && parts[0] == "cmd" {
		return parts[0] + "/" + parts[1], true
	}
	return "", false
}

// TestRulesCatchBrokenArrows checks the rule helpers on made-up paths, so a
// rule that can no longer fail is noticed.
func TestRulesCatchBrokenArrows(t *testing.T) {
	cases := []struct {
		path     string
		internal bool
	}{
		{"internal/timeline", true},
		{"cmd/gorun/internal/sysinfo", true},
		{"collective", false},
		{"collective/collectivetest", false},
		{"internalish", false},
	}
	for _, c := range cases {
		if got := isInternal(c.path); got != c.internal {
			t.Errorf("isInternal(%q) = %v, want %v", c.path, got, c.internal)
		}
	}
	if c, ok := commandOf("cmd/gorun/internal/sysinfo"); !ok || c != "cmd/gorun" {
		t.Errorf("commandOf = %q, %v", c, ok)
	}
	if _, ok := commandOf("collective"); ok {
		t.Error("collective taken for a command")
	}
}
