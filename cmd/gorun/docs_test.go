package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const repoRoot = "../.."

// docFlags returns the flag names (long, and shorthands as one letter)
// written in backquotes in the "## Flags" section of docs/gorun.md.
func docFlags(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "gorun.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Flags\n")
	if start < 0 {
		t.Fatal(`docs/gorun.md has no "## Flags" section`)
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	names := map[string]bool{}
	for _, code := range regexp.MustCompile("`([^`]*)`").FindAllStringSubmatch(section, -1) {
		for _, m := range regexp.MustCompile(`(?:^|[\s,(])--?([a-zA-Z][a-z0-9-]*)`).FindAllStringSubmatch(code[1], -1) {
			names[m[1]] = true
		}
	}
	return names
}

// The flag table of docs/gorun.md and `gorun --help` list the same flags.
func TestDocsFlagTableMatchesHelp(t *testing.T) {
	cmd := newCommand(io.Discard, io.Discard)
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	doc := docFlags(t)
	help := map[string]bool{"np": true} // -np: gorun's spelling of -n
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		help[f.Name] = true
		if !doc[f.Name] {
			t.Errorf("--%s is in gorun --help but not in docs/gorun.md's flag table", f.Name)
		}
		if f.Shorthand != "" {
			help[f.Shorthand] = true
			if !doc[f.Shorthand] {
				t.Errorf("-%s (--%s) is in gorun --help but not in docs/gorun.md's flag table", f.Shorthand, f.Name)
			}
		}
	})
	var extra []string
	for name := range doc {
		if !help[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		t.Errorf("docs/gorun.md's flag table names %q, which gorun --help does not have", name)
	}
}

// README and docs link only to files in the repository.
func TestDocsLinksStayInRepo(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repoRoot, "README.md"))
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "../shared") {
			t.Errorf("%s mentions ../shared, which is not in the repository", f)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(f), target))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(abs, root+string(filepath.Separator)) {
				t.Errorf("%s links to %s, outside the repository", f, target)
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s links to %s: %v", f, target, err)
			}
		}
	}
}

// The README's minimal program builds as a module of its own and runs
// under gorun as the README says.
func TestReadmeProgram(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, "## Use it in your program")
	if i < 0 {
		t.Fatal(`README.md has no "## Use it in your program" section`)
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(readme[i:])
	if m == nil {
		t.Fatal("no Go program in the README's section")
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"main.go": m[1],
		"go.mod":  "module example.com/avg\n\ngo 1.26\n\nrequire github.com/gorovod/gorovod v0.0.0\n\nreplace github.com/gorovod/gorovod => " + root + "\n",
		"go.sum":  string(sum),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", "avg", ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the README's program: %v\n%s", err, out)
	}
	r := gorun(t, 30*time.Second, "-np", "2", filepath.Join(dir, "avg"))
	for _, want := range []string{"[0]<stdout>:rank 0 of 2: average rank 0.5\n", "[1]<stdout>:rank 1 of 2: average rank 0.5\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("exit %d, stdout %q lacks %q\n%s", r.code, r.stdout, want, r.stderr)
		}
	}
}
