package keylock

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestLockSerializesOneKey(t *testing.T) {
	t.Parallel()
	m := New()
	counter := 0
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := m.Lock(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			v := counter // read-modify-write that races without the lock
			time.Sleep(time.Microsecond)
			counter = v + 1
			unlock()
		}()
	}
	wg.Wait()
	if counter != 64 {
		t.Fatalf("got counter %d, want 64", counter)
	}
	if n := len(m.locks); n != 0 {
		t.Fatalf("got %d idle entries, want 0", n)
	}
}

func TestLockHonoursContext(t *testing.T) {
	t.Parallel()
	m := New()
	unlock, err := m.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Lock(ctx, "k"); err == nil {
		t.Fatal("got the lock while it was held, want a context error")
	}
	other, err := m.Lock(context.Background(), "other")
	if err != nil {
		t.Fatalf("other key: got %v, want the lock", err)
	}
	other()
	unlock()
	again, err := m.Lock(context.Background(), "k")
	if err != nil {
		t.Fatalf("after unlock: got %v, want the lock", err)
	}
	again()
}
