package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// notifyWait prints what a command waits for once the wait has lasted first, then a line every
// every, until the returned stop is called; stop returns once nothing more will be printed. Quick
// waits print nothing, so re-intercepting stays quiet while a first intercept, which waits for a
// rollout, says what it is doing.
func notifyWait(w io.Writer, first, every time.Duration, what string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTimer(first)
		defer t.Stop()
		said := false
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if !said {
				fmt.Fprintf(w, "Waiting for %s\n", what)
				said = true
			} else {
				fmt.Fprintf(w, "  still waiting after %s\n", time.Since(start).Round(time.Second))
			}
			t.Reset(every)
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}
