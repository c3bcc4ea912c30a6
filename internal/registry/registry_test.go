package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	dockerregistry "github.com/docker/docker/api/types/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestLocalHosting(t *testing.T) {
	ctx := context.Background()
	if _, err := LocalHosting(ctx, fake.NewClientset()); !errors.Is(err, ErrNoHosting) {
		t.Errorf("no ConfigMap: err = %v, want ErrNoHosting", err)
	}
	cm := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-public", Name: "local-registry-hosting"}, Data: data}
	}
	if _, err := LocalHosting(ctx, fake.NewClientset(cm(map[string]string{"other": "x"}))); !errors.Is(err, ErrNoHosting) {
		t.Errorf("no v1 entry: err = %v, want ErrNoHosting", err)
	}
	h, err := LocalHosting(ctx, fake.NewClientset(cm(map[string]string{
		"localRegistryHosting.v1": "host: \"localhost:5001\"\nhostFromContainerRuntime: \"kind-registry:5000\"\nhelp: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n",
	})))
	if err != nil || h.Host != "localhost:5001" || h.PullHost() != "kind-registry:5000" {
		t.Errorf("hosting = %+v, %v", h, err)
	}
	h, err = LocalHosting(ctx, fake.NewClientset(cm(map[string]string{"localRegistryHosting.v1": "host: localhost:5001\n"})))
	if err != nil || h.PullHost() != "localhost:5001" {
		t.Errorf("without hostFromContainerRuntime: %+v, %v; want the push host", h, err)
	}
	for _, bad := range []string{"help: no host\n", "host: [unclosed\n"} {
		if _, err := ParseHosting(bad); err == nil {
			t.Errorf("ParseHosting(%q) accepted it", bad)
		}
	}
}

func decodeAuth(t *testing.T, s string) dockerregistry.AuthConfig {
	t.Helper()
	raw, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("auth %q: %v", s, err)
	}
	var ac dockerregistry.AuthConfig
	if err := json.Unmarshal(raw, &ac); err != nil {
		t.Fatal(err)
	}
	return ac
}

func TestCredentials(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("alice:pa:ss"))
	helper := func(name, host string) (string, string, bool, error) {
		switch name + "/" + host {
		case "ecr/123.dkr.ecr.example.com":
			return "AWS", "tok", true, nil
		case "desktop/ghcr.io":
			return "<token>", "identity", true, nil
		case "broken/reg.example.com":
			return "", "", false, errors.New("exit status 1")
		}
		return "", "", false, nil
	}
	cfg := `{"auths": {"https://index.docker.io/v1/": {"auth": "` + basic + `"}, "localhost:5001": {}, "quay.io": {"auth": "` + basic + `"}},
	  "credsStore": "desktop", "credHelpers": {"123.dkr.ecr.example.com": "ecr", "reg.example.com": "broken"}}`
	for _, tt := range []struct {
		host, user, pass, token string
		none, fails             bool
	}{
		{host: "123.dkr.ecr.example.com", user: "AWS", pass: "tok"},
		{host: "ghcr.io", token: "identity"},
		{host: "quay.io", user: "alice", pass: "pa:ss"}, // the store has none: auths
		{host: "index.docker.io", user: "alice", pass: "pa:ss"},
		{host: "localhost:5001"}, // an entry without credentials
		{host: "other.example.com", none: true},
		{host: "reg.example.com", fails: true},
	} {
		got, err := credentialsFrom([]byte(cfg), tt.host, helper)
		if tt.fails {
			if err == nil || !strings.Contains(err.Error(), "docker-credential-broken") {
				t.Errorf("%s: err = %v, want the helper named", tt.host, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.host, err)
			continue
		}
		if tt.none {
			if got != "" {
				t.Errorf("%s: auth %q, want none", tt.host, got)
			}
			continue
		}
		ac := decodeAuth(t, got)
		if ac.Username != tt.user || ac.Password != tt.pass || ac.IdentityToken != tt.token || ac.ServerAddress != tt.host {
			t.Errorf("%s: auth = %+v", tt.host, ac)
		}
	}
	if _, err := credentialsFrom([]byte(`{"auths": {"x.io": {"auth": "bm9jb2xvbg=="}}}`), "x.io", helper); err == nil {
		t.Error("an auth without a colon was accepted")
	}
}

type fakePush struct {
	tagged   [][2]string
	pushed   []image.PushOptions
	tagErr   error
	progress string
}

func (f *fakePush) ImageTag(_ context.Context, source, target string) error {
	f.tagged = append(f.tagged, [2]string{source, target})
	return f.tagErr
}

func (f *fakePush) ImagePush(_ context.Context, ref string, o image.PushOptions) (io.ReadCloser, error) {
	f.pushed = append(f.pushed, o)
	return io.NopCloser(strings.NewReader(f.progress)), nil
}

func TestPush(t *testing.T) {
	ok := &fakePush{progress: `{"status":"Pushing"}` + "\n" + `{"status":"v1: digest: sha256:ab size: 528"}` + "\n"}
	if err := Push(context.Background(), ok, "teledock/a:v1", "localhost:5001/teledock/a:v1", "AUTH"); err != nil {
		t.Fatal(err)
	}
	if len(ok.tagged) != 1 || ok.tagged[0] != [2]string{"teledock/a:v1", "localhost:5001/teledock/a:v1"} || ok.pushed[0].RegistryAuth != "AUTH" {
		t.Errorf("tagged %v, pushed %+v", ok.tagged, ok.pushed)
	}
	failed := &fakePush{progress: `{"status":"Pushing"}` + "\n" + `{"errorDetail":{"message":"unauthorized: authentication required"},"error":"unauthorized"}` + "\n"}
	if err := Push(context.Background(), failed, "a", "r/a", ""); err == nil || !strings.Contains(err.Error(), "authentication required") {
		t.Errorf("a push failed in the stream: err = %v", err)
	}
	if err := Push(context.Background(), &fakePush{tagErr: errors.New("no such image")}, "a", "r/a", ""); err == nil {
		t.Error("a failed tag was not reported")
	}
}
