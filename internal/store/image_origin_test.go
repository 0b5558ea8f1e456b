package store

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
)

// TestImageOriginRoundTrip: an image made from a container image keeps
// its reference, digest, platform, config and blobs; other images read
// back an empty origin.
func TestImageOriginRoundTrip(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	origin := ImageOrigin{Ref: "debian:12", Digest: "sha256:aa", Platform: "linux/amd64",
		Config: json.RawMessage(`{"config":{"WorkingDir":"/srv"}}`), Blobs: []string{"sha256:bb", "sha256:cc"}}
	if err := s.CreateImage(ctx, Image{ID: "i1", Name: "deb", KernelPath: "/k", RootfsPath: "/r", Source: ImageSourceOCI, Origin: origin}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, Image{ID: "i2", Name: "plain", KernelPath: "/k", RootfsPath: "/r", Source: ImageSourceImport}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "deb")
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin.Ref != origin.Ref || got.Origin.Digest != origin.Digest || got.Origin.Platform != origin.Platform ||
		string(got.Origin.Config) != string(origin.Config) || !slices.Equal(got.Origin.Blobs, origin.Blobs) {
		t.Errorf("origin = %+v, want %+v", got.Origin, origin)
	}
	plain, err := s.GetImage(ctx, "plain")
	if err != nil {
		t.Fatal(err)
	}
	if plain.Origin.Ref != "" || string(plain.Origin.Config) != "{}" || len(plain.Origin.Blobs) != 0 {
		t.Errorf("plain image origin = %+v", plain.Origin)
	}
	if err := s.CreateImage(ctx, Image{ID: "i3", Name: "bad", KernelPath: "/k", RootfsPath: "/r", Source: ImageSourceOCI,
		Origin: ImageOrigin{Config: json.RawMessage(`{nope`)}}); err == nil {
		t.Error("an invalid config was stored")
	}
}
