package main

import (
	"encoding/json"
	"io"
)

// schemaVersion is the version of every JSON document the CLI prints (docs/json.md). It changes
// only when a field changes meaning or goes away; new fields do not change it.
const schemaVersion = 1

// writeJSON prints v indented, as every -o json does.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// errorJSON is what a command run with -o json prints when it fails (and exits non-zero).
type errorJSON struct {
	SchemaVersion int             `json:"schemaVersion"`
	Error         errorDetailJSON `json:"error"`
}

type errorDetailJSON struct {
	Code    string `json:"code"`           // stable, for programs: NOT_CONNECTED, NO_SUCH_WORKLOAD, ...
	Reason  string `json:"reason"`         // the category in words
	Message string `json:"message"`        // the whole error, as the text output says it
	Hint    string `json:"hint,omitempty"` // what to do about it
}

func newErrorJSON(err error) errorJSON {
	k := kindOf(err)
	return errorJSON{SchemaVersion: schemaVersion, Error: errorDetailJSON{Code: k.code, Reason: k.reason(), Message: err.Error(), Hint: k.hint}}
}
