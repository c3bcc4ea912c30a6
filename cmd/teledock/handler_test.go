package main

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/docker/docker/api/types/container"
)

// TestRemoveStaleHandler: only a handler of this connection whose intercept has ended is removed;
// the user's own containers and a live handler are never touched.
func TestRemoveStaleHandler(t *testing.T) {
	handler := func(id, conn, interceptID string) container.InspectResponse {
		c := inspected(id, "echo", true, "container:teledock-daemon-"+conn, nil)
		c.Config = &container.Config{Labels: map[string]string{}}
		if conn != "" {
			c.Config.Labels[labelHandlerConnection] = conn
			c.Config.Labels[labelHandlerIntercept] = interceptID
		}
		return c
	}
	for _, tc := range []struct {
		what      string
		existing  *container.InspectResponse
		wantGone  bool
		wantWords string
	}{
		{what: "no container of that name"},
		{what: "the handler of an ended intercept", existing: ptr(handler("c1", "default", "old")), wantGone: true, wantWords: "removed container echo"},
		{what: "the handler of this intercept", existing: ptr(handler("c1", "default", "new"))},
		{what: "a handler of another connection", existing: ptr(handler("c1", "other", "old"))},
		{what: "the user's own container", existing: ptr(handler("c1", "", ""))},
	} {
		t.Run(tc.what, func(t *testing.T) {
			engine := &fakeEngine{containers: map[string]container.InspectResponse{}}
			if tc.existing != nil {
				engine.containers["echo"] = *tc.existing
			}
			var stderr bytes.Buffer
			d := deps{stderr: &stderr, log: slog.New(slog.DiscardHandler)}
			if err := removeStaleHandler(context.Background(), d, engine, "echo", "default", "new"); err != nil {
				t.Fatal(err)
			}
			if gone := slices.Contains(engine.removed, "c1"); gone != tc.wantGone {
				t.Fatalf("removed %v, want removed: %v", engine.removed, tc.wantGone)
			}
			if !bytes.Contains(stderr.Bytes(), []byte(tc.wantWords)) {
				t.Fatalf("stderr %q, want %q", stderr.String(), tc.wantWords)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
