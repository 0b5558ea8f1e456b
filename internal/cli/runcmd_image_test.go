package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestRunCommandForImage(t *testing.T) {
	app := api.Image{Name: "app", Origin: &api.ImageOrigin{Config: json.RawMessage(
		`{"config":{"Entrypoint":["/app"],"Cmd":["serve"]}}`)}}
	shell := api.Image{Name: "sh", Origin: &api.ImageOrigin{Config: json.RawMessage(`{"config":{"Cmd":["bash"]}}`)}}
	bare := api.Image{Name: "bare", Origin: &api.ImageOrigin{Config: json.RawMessage(`{"config":{}}`)}}
	plain := api.Image{Name: "debian"}
	for _, c := range []struct {
		img     api.Image
		argv    []string
		want    []string
		wantErr string
	}{
		{app, nil, []string{"/app", "serve"}, ""},
		{app, []string{"--help"}, []string{"/app", "--help"}, ""},
		{shell, nil, []string{"bash"}, ""},
		{shell, []string{"ls"}, []string{"ls"}, ""},
		{plain, []string{"uname", "-a"}, []string{"uname", "-a"}, ""},
		{bare, nil, nil, `image "bare" has no Entrypoint or Cmd`},
		{plain, nil, nil, "give the command to run after --"},
	} {
		got, err := commandFor(c.img, c.argv)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s %q: error %v, want %q", c.img.Name, c.argv, err, c.wantErr)
		case c.wantErr == "" && (err != nil || !slices.Equal(got, c.want)):
			t.Errorf("%s %q = %q, %v; want %q", c.img.Name, c.argv, got, err, c.want)
		}
	}
}
