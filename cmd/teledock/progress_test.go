package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the notifier's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestNotifyWaitQuietWhenQuick(t *testing.T) {
	var out lockedBuffer
	stop := notifyWait(&out, time.Hour, time.Hour, "the agent")
	stop()
	stop() // twice is harmless
	if s := out.String(); s != "" {
		t.Errorf("a quick wait printed %q", s)
	}
}

func TestNotifyWaitSaysWhatAndKeepsGoing(t *testing.T) {
	var out lockedBuffer
	stop := notifyWait(&out, time.Millisecond, time.Millisecond, "the traffic-agent of Deployment echo")
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "still waiting") < 2 {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no repeated progress within 5s: %q", out.String())
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	s := out.String()
	if !strings.HasPrefix(s, "Waiting for the traffic-agent of Deployment echo\n") {
		t.Errorf("first line: %q", s)
	}
	// Nothing after stop returned.
	time.Sleep(10 * time.Millisecond)
	if after := out.String(); after != s {
		t.Errorf("printed after stop: %q", strings.TrimPrefix(after, s))
	}
}
