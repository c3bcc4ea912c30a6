package intercept

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink shared by the manager's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The pod's environment (Secret values among it) passes through the daemon on every create, list
// and re-creation; none of it may reach the log, at the most verbose level either.
func TestSecretValuesNotLogged(t *testing.T) {
	const secret = "s3cr3t-db-password"
	f := newFakeManager(t)
	f.env = map[string]string{"DB_PASSWORD": secret, "PLAIN": "visible-value"}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, sess := startInterceptsLog(t, f, log)
	waitWatch(t, f, "s1")

	info, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: tcpEcho(t).Port(), ServicePort: "http"})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetEnvironment()["DB_PASSWORD"] != secret {
		t.Fatalf("environment = %v: the value did not pass through, so the check proves nothing", info.GetEnvironment())
	}
	_ = m.List()
	sess.setID("s2") // the intercept is made again, and logged
	waitWatch(t, f, "s2")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "created again"); {
		if time.Now().After(deadline) {
			t.Fatal("the intercept was not made again under the new session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.Remove(ctxT(t), "echo"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log holds a Secret's value:\n%s", logs.String())
	}
}
