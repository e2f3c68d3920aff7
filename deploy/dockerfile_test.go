package deploy

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	body       []instruction
}

var knownInstructions = map[string]bool{
	"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true, "ADD": true,
	"COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true, "WORKDIR": true, "ARG": true,
	"ONBUILD": true, "STOPSIGNAL": true, "HEALTHCHECK": true, "SHELL": true,
}

// parseDockerfile splits a Dockerfile into stages. It knows the syntax the
// services' Dockerfiles use: comments, backslash continuations, one
// instruction a line.
func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if !knownInstructions[cmd] {
			t.Fatalf("unknown instruction %q", line)
		}
		args = strings.TrimSpace(args)
		if cmd == "FROM" {
			f := strings.Fields(args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			} else if len(f) != 1 {
				t.Fatalf("FROM %q", args)
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			t.Fatalf("%s before FROM", cmd)
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, instruction{cmd, args})
	}
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// The images: a Go 1.26 builder, a static binary, an unprivileged small
// final image that exposes the service's port.
func TestDockerfiles(t *testing.T) {
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			text := string(readFile(t, "services", svc.name, "Dockerfile"))
			stages := parseDockerfile(t, text)
			if len(stages) != 2 {
				t.Fatalf("%d stages, want a builder and a final image", len(stages))
			}
			build, final := stages[0], stages[1]
			if build.from != "golang:1.26" || build.name != "build" {
				t.Errorf("builder FROM %s AS %s, want golang:1.26 AS build", build.from, build.name)
			}
			envs := strings.Join(build.all("ENV"), " ")
			for _, e := range []string{"CGO_ENABLED=0", "GOWORK=off"} {
				if !strings.Contains(envs, e) {
					t.Errorf("builder does not set %s", e)
				}
			}
			if !regexp.MustCompile(`^alpine:\d+\.\d+$`).MatchString(final.from) {
				t.Errorf("final FROM %s: want a pinned alpine", final.from)
			}
			if users := final.all("USER"); len(users) != 1 || !regexp.MustCompile(`^[1-9]\d*:[1-9]\d*$`).MatchString(users[0]) {
				t.Errorf("final USER %v: want a numeric non-root uid:gid", users)
			}
			if exposed := final.all("EXPOSE"); !slices.Equal(exposed, []string{fmt.Sprint(svc.port)}) {
				t.Errorf("EXPOSE %v, want %d", exposed, svc.port)
			}
			if env := final.all("ENV"); !slices.Contains(env, fmt.Sprintf("RCM_HTTP_ADDR=:%d", svc.port)) {
				t.Errorf("final ENV %v does not listen on all interfaces at %d", env, svc.port)
			}
			bin := "/usr/local/bin/" + svc.name
			if ep := final.all("ENTRYPOINT"); !slices.Equal(ep, []string{`["` + bin + `"]`}) {
				t.Errorf("ENTRYPOINT %v, want [%q] (exec form)", ep, bin)
			}
			if cp := final.all("COPY"); !slices.Equal(cp, []string{"--from=build /out/" + svc.name + " " + bin}) {
				t.Errorf("final COPY %v: want only the binary", cp)
			}
		})
	}
}

// What each Dockerfile's builder copies from the context (the repository
// root less .dockerignore) is enough to build the service with its own
// go.mod, and the result is a static binary without the development
// servers. This replays the builder stage without Docker: same files, same
// environment, same go build command.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the four services")
	}
	ignore := dockerignore(t)
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			t.Parallel()
			stages := parseDockerfile(t, string(readFile(t, "services", svc.name, "Dockerfile")))
			build := stages[0]
			tmp := t.TempDir()
			src, out := filepath.Join(tmp, "src"), filepath.Join(tmp, "out")
			// Absolute paths of the image, mapped into tmp.
			mapPath := func(p string) string {
				switch {
				case p == "/src" || strings.HasPrefix(p, "/src/"):
					return filepath.Join(src, strings.TrimPrefix(p, "/src"))
				case p == "/out" || strings.HasPrefix(p, "/out/"):
					return filepath.Join(out, strings.TrimPrefix(p, "/out"))
				}
				t.Fatalf("path %s outside /src and /out", p)
				return ""
			}
			workdir := "/"
			environ := append(os.Environ(), "GOFLAGS=-mod=readonly")
			ran := false
			for _, in := range build.body {
				switch in.cmd {
				case "ENV":
					for _, kv := range strings.Fields(in.args) {
						if !strings.Contains(kv, "=") {
							t.Fatalf("ENV %q: want key=value", in.args)
						}
						environ = append(environ, kv)
					}
				case "WORKDIR":
					workdir = in.args
					if err := os.MkdirAll(mapPath(workdir), 0o755); err != nil {
						t.Fatal(err)
					}
				case "COPY":
					f := strings.Fields(in.args)
					dst := f[len(f)-1]
					if !strings.HasPrefix(dst, "/") {
						dst = filepath.Join(workdir, dst)
					}
					for _, s := range f[:len(f)-1] {
						copyContext(t, ignore, strings.TrimSuffix(s, "/"), mapPath(dst))
					}
				case "RUN":
					script := in.args
					for _, m := range regexp.MustCompile(`--mount=\S+\s*`).FindAllString(script, -1) {
						script = strings.Replace(script, m, "", 1)
					}
					script = strings.ReplaceAll(script, " /out/", " "+out+"/")
					if err := os.MkdirAll(out, 0o755); err != nil {
						t.Fatal(err)
					}
					cmd := exec.Command("sh", "-c", script)
					cmd.Dir = mapPath(workdir)
					cmd.Env = environ
					if b, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("RUN %s: %v\n%s", script, err, indent(string(b)))
					}
					ran = true
				default:
					t.Fatalf("builder instruction %s is not replayed by this test", in.cmd)
				}
			}
			if !ran {
				t.Fatal("the builder runs nothing")
			}
			checkBinary(t, filepath.Join(out, svc.name))
		})
	}
}

func dockerignore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(filepath.Join(root(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

// copyContext copies src (relative to the repository root) to dst as
// `COPY src dst/` does, leaving out what .dockerignore excludes.
func copyContext(t *testing.T, ignore *patternmatcher.PatternMatcher, src, dst string) {
	t.Helper()
	base := root(t)
	from := filepath.Join(base, src)
	info, err := os.Stat(from)
	if err != nil {
		t.Fatalf("COPY %s: %v", src, err)
	}
	if !info.IsDir() {
		if excluded(t, ignore, src) {
			t.Fatalf("COPY %s: excluded by .dockerignore", src)
		}
		copyFile(t, from, filepath.Join(dst, filepath.Base(src)))
		return
	}
	err = filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, path)
		if err != nil {
			return err
		}
		if excluded(t, ignore, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		inner, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, inner), 0o755)
		}
		copyFile(t, path, filepath.Join(dst, inner))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func excluded(t *testing.T, ignore *patternmatcher.PatternMatcher, rel string) bool {
	t.Helper()
	match, err := ignore.MatchesOrParentMatches(rel)
	if err != nil {
		t.Fatal(err)
	}
	return match
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkBinary: statically linked (runs on any base image), built without
// cgo, and linking neither of the embedded development servers.
func checkBinary(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("dynamically linked: has a program interpreter")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("links shared libraries %v", libs)
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if s.Key == "CGO_ENABLED" && s.Value != "0" {
			t.Errorf("built with CGO_ENABLED=%s", s.Value)
		}
	}
	for _, d := range info.Deps {
		if strings.Contains(d.Path, "kfake") || strings.Contains(d.Path, "FerretDB") || d.Path == "github.com/rcm-platform/rcm/dev" {
			t.Errorf("links the development module %s", d.Path)
		}
	}
}

// The context excludes what must not reach an image build.
func TestDockerignore(t *testing.T) {
	ignore := dockerignore(t)
	for path, want := range map[string]bool{
		".git/config":                   true,
		".data/mongo/db":                true,
		"bin/gateway":                   true,
		".env":                          true,
		"services/feed/feed":            true,
		"dev/embedded/kafka.go":         true,
		"dev/go.mod":                    false,
		"dev/go.sum":                    false,
		"pkg/go.mod":                    false,
		"api/openapi.yaml":              false,
		"services/gateway/main.go":      false,
		"services/gateway/internal/api": false,
	} {
		if got := excluded(t, ignore, path); got != want {
			t.Errorf("%s excluded: %v, want %v", path, got, want)
		}
	}
}
