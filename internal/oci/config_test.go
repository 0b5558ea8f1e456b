package oci

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestProcessConfigCommand(t *testing.T) {
	raw := json.RawMessage(`{"architecture":"amd64","config":{"Env":["A=1"],"WorkingDir":"/srv","User":"app:app",
		"Entrypoint":["/bin/tini","--"],"Cmd":["serve","--port","80"]}}`)
	cfg, err := ParseProcessConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WorkingDir != "/srv" || cfg.User != "app:app" || !slices.Equal(cfg.Env, []string{"A=1"}) {
		t.Fatalf("parsed %+v", cfg)
	}
	for _, c := range []struct {
		cfg  ProcessConfig
		args []string
		want []string
	}{
		// Docker semantics: Entrypoint + (args or Cmd).
		{cfg, nil, []string{"/bin/tini", "--", "serve", "--port", "80"}},
		{cfg, []string{"sh"}, []string{"/bin/tini", "--", "sh"}},
		{ProcessConfig{Cmd: []string{"bash"}}, nil, []string{"bash"}},
		{ProcessConfig{Cmd: []string{"bash"}}, []string{"ls", "/"}, []string{"ls", "/"}},
		{ProcessConfig{}, nil, nil},
	} {
		if got := c.cfg.Command(c.args); !slices.Equal(got, c.want) {
			t.Errorf("%+v.Command(%q) = %q, want %q", c.cfg, c.args, got, c.want)
		}
	}
	// Command never writes into the config's slices.
	ep := make([]string, 1, 4)
	ep[0] = "/entry"
	shared := ProcessConfig{Entrypoint: ep}
	_ = shared.Command([]string{"a"})
	if got := shared.Command([]string{"b", "c"}); !slices.Equal(got, []string{"/entry", "b", "c"}) || len(shared.Entrypoint) != 1 {
		t.Errorf("Command aliased the Entrypoint: %q", got)
	}
	if _, err := ParseProcessConfig(json.RawMessage(`{"config":`)); err == nil {
		t.Error("a truncated config parsed")
	}
	if cfg, err := ParseProcessConfig(nil); err != nil || cfg.Command(nil) != nil {
		t.Errorf("no config: %+v, %v", cfg, err)
	}
}
