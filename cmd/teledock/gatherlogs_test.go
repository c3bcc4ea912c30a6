package main

import (
	"archive/zip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	r := newRedactor([]string{"s3cr3t-password", "s3cr3t", "no", "s3cr3t"})
	in := "db password=s3cr3t-password, api key s3cr3t; flag no; Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.payload.sig\n" +
		`{"token": "abcdefghijklmnop"} token=zyxwvutsrqponm`
	got := string(r.redact([]byte(in)))
	for _, leak := range []string{"s3cr3t", "eyJhbGci", "abcdefghijklmnop", "zyxwvutsrqponm"} {
		if strings.Contains(got, leak) {
			t.Errorf("%q left in:\n%s", leak, got)
		}
	}
	// Short values are not secrets worth blanking the logs for; the rest of the text stays.
	for _, keep := range []string{"flag no;", "db password=<redacted>,", "Bearer <redacted>"} {
		if !strings.Contains(got, keep) {
			t.Errorf("%q missing from:\n%s", keep, got)
		}
	}
}

func TestWriteZip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs.zip")
	files := map[string][]byte{"daemon.log": []byte("key=hunter22\n"), "manager/m.log": []byte("ok\n")}
	if err := writeZip(path, files, newRedactor([]string{"hunter22"})); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("zip file %v %v, want mode 0600", fi, err)
	}
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	got := map[string]string{}
	for _, f := range z.File {
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		got[f.Name] = string(b)
	}
	if got["daemon.log"] != "key=<redacted>\n" || got["manager/m.log"] != "ok\n" || len(got) != 2 {
		t.Errorf("zip holds %q", got)
	}
	// An existing file is never overwritten.
	if err := writeZip(path, files, newRedactor(nil)); err == nil {
		t.Error("writeZip overwrote an existing file")
	}
}
