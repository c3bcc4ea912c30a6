package flow

import (
	"context"
	"testing"
	"time"
)

// TestBackoff: the waits double from first up to max and stay there; jitter keeps each within
// its fraction.
func TestBackoff(t *testing.T) {
	next := Backoff(250*time.Millisecond, time.Second, 0)
	for i, want := range []time.Duration{250, 500, 1000, 1000, 1000} {
		if got := next(); got != want*time.Millisecond {
			t.Errorf("wait %d = %s, want %s", i, got, want*time.Millisecond)
		}
	}
	// A max below first still starts at first, then keeps to max.
	next = Backoff(250*time.Millisecond, 100*time.Millisecond, 0)
	if a, b := next(), next(); a != 250*time.Millisecond || b != 100*time.Millisecond {
		t.Errorf("waits %s, %s; want 250ms, 100ms", a, b)
	}
	next = Backoff(time.Second, time.Second, 0.2)
	for range 100 {
		if d := next(); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jittered wait %s outside 1s ±20%%", d)
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep without a cancelled context reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with a cancelled context reported true")
	}
	if time.Since(start) > time.Second {
		t.Error("Sleep did not return when its context ended")
	}
}
