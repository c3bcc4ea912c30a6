package inject

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// applyPatch applies ops to the pod the way the API server would and returns the result. It
// supports the operations Mutate emits: add, replace, remove and test.
func applyPatch(tb testing.TB, pod *corev1.Pod, ops []JSONPatchOp) *corev1.Pod {
	tb.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		tb.Fatal(err)
	}
	// The ops travel as JSON; decode them from JSON too, so that values have JSON types.
	opsJSON, err := json.Marshal(ops)
	if err != nil {
		tb.Fatal(err)
	}
	var doc any
	var decoded []struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(opsJSON, &decoded); err != nil {
		tb.Fatal(err)
	}
	for i, op := range decoded {
		if doc, err = applyOp(doc, splitPointer(op.Path), op.Op, op.Value); err != nil {
			tb.Fatalf("op %d %s %s: %v", i, op.Op, op.Path, err)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		tb.Fatal(err)
	}
	var patched corev1.Pod
	if err := json.Unmarshal(out, &patched); err != nil {
		tb.Fatal(err)
	}
	return &patched
}

func splitPointer(p string) []string {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range parts {
		parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(s)
	}
	return parts
}

// applyOp applies one operation at path below doc and returns the new doc.
func applyOp(doc any, path []string, op string, value any) (any, error) {
	key := path[0]
	last := len(path) == 1
	switch d := doc.(type) {
	case map[string]any:
		child, ok := d[key]
		if !last {
			if !ok {
				return nil, fmt.Errorf("no member %q", key)
			}
			v, err := applyOp(child, path[1:], op, value)
			d[key] = v
			return d, err
		}
		switch op {
		case "add":
			d[key] = value
		case "replace":
			if !ok {
				return nil, fmt.Errorf("replace: no member %q", key)
			}
			d[key] = value
		case "remove":
			if !ok {
				return nil, fmt.Errorf("remove: no member %q", key)
			}
			delete(d, key)
		case "test":
			if !reflect.DeepEqual(child, value) {
				return nil, fmt.Errorf("test: %v != %v", child, value)
			}
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		return d, nil
	case []any:
		if last && op == "add" && key == "-" {
			return append(d, value), nil
		}
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 || i >= len(d) {
			return nil, fmt.Errorf("bad index %q", key)
		}
		if !last {
			v, err := applyOp(d[i], path[1:], op, value)
			d[i] = v
			return d, err
		}
		switch op {
		case "replace":
			d[i] = value
		case "test":
			if !reflect.DeepEqual(d[i], value) {
				return nil, fmt.Errorf("test: %v != %v", d[i], value)
			}
		default:
			return nil, fmt.Errorf("unsupported array op %q", op)
		}
		return d, nil
	}
	return nil, fmt.Errorf("cannot descend into %T at %q", doc, key)
}
