package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// profile captures, in the background, d of CPU profile from every
// service (their RCM_PPROF_ADDR listener) and from this process, which
// runs the embedded store and broker. The files are
// PprofDir/<stack>-<phase>-<process>.pprof. The returned function waits
// for them. Without PprofDir it does nothing.
func (e *env) profile(ctx context.Context, phase string, d time.Duration) (wait func()) {
	if e.cfg.PprofDir == "" {
		return func() {}
	}
	secs := max(1, int(d/time.Second))
	path := func(proc string) string {
		return filepath.Join(e.cfg.PprofDir, fmt.Sprintf("%s-%s-%s.pprof", e.name, phase, proc))
	}
	var wg sync.WaitGroup
	for service, addr := range e.pprof {
		wg.Go(func() {
			if err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), path(service)); err != nil {
				e.logf("no profile of %s: %v", service, err)
			}
		})
	}
	wg.Go(func() {
		f, err := os.Create(path("rcmbench"))
		if err != nil {
			e.logf("no profile of this process: %v", err)
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			e.logf("no profile of this process: %v", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(secs) * time.Second):
		}
		pprof.StopCPUProfile()
	})
	return wg.Wait
}

// heapProfile saves a service's heap profile, when profiling, and the
// text form whose runtime.MemStats tell the stacks' and the heap's shares
// of the memory.
func (e *env) heapProfile(ctx context.Context, service, phase string) {
	addr, ok := e.pprof[service]
	if !ok {
		return
	}
	base := filepath.Join(e.cfg.PprofDir, fmt.Sprintf("%s-%s-%s.heap", e.name, phase, service))
	if err := fetchProfile(ctx, "http://"+addr+"/debug/pprof/heap", base+".pprof"); err != nil {
		e.logf("no heap profile of %s: %v", service, err)
	}
	if err := fetchProfile(ctx, "http://"+addr+"/debug/pprof/heap?debug=1", base+".txt"); err != nil {
		e.logf("no heap profile of %s: %v", service, err)
	}
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
