package api

import (
	"context"
	"encoding/json"
)

// MethodImagePull makes an image from a container image. Part of the wire
// contract.
const MethodImagePull = "image.pull"

// MethodImagePrune drops cached container image blobs no image uses. Part
// of the wire contract.
const MethodImagePrune = "image.prune"

// ImagePullRequest makes an image from a container image: exactly one of
// Ref (a registry reference), OCILayout (DIR[:TAG]) and DockerArchive
// (a `docker save` tar) is set. Paths are read by the daemon, so they must
// be absolute.
type ImagePullRequest struct {
	// Name is the new image's name; derived from the source when empty.
	Name          string `json:"name,omitempty"`
	Ref           string `json:"ref,omitempty"`
	OCILayout     string `json:"oci_layout,omitempty"`
	DockerArchive string `json:"docker_archive,omitempty"`
	// Platform is os/arch[/variant]; linux/amd64 when empty.
	Platform string `json:"platform,omitempty"`
	// SizeBytes is room added to the root file system beyond its content.
	SizeBytes int64 `json:"size_bytes,omitempty"`
	// Kernel is as for image build: "", "microvm", "debian" or a file.
	Kernel string `json:"kernel,omitempty"`
	// BootFrom names an existing image whose kernel and initrd the new
	// image boots with (nothing is fetched for them); excludes Kernel.
	BootFrom string `json:"boot_from,omitempty"`
	// Insecure allows plain HTTP to the registry.
	Insecure bool `json:"insecure,omitempty"`
	// Auth is the invoking user's registry credential, read by the CLI from
	// their Docker/Podman config and used by the daemon for this pull only:
	// it is never stored or logged.
	Auth *RegistryAuth `json:"auth,omitempty"`
}

// RegistryAuth is a registry credential (the fields of a Docker config's
// auth entry).
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identity_token,omitempty"`
	RegistryToken string `json:"registry_token,omitempty"`
}

// ImageOrigin is where an image made from a container image came from,
// shown by `image show`.
type ImageOrigin struct {
	Ref      string `json:"ref"`
	Digest   string `json:"digest"`
	Platform string `json:"platform"`
	// Config is the container image's config file; its Env, WorkingDir
	// and User are the defaults of `vm exec` in the image's VMs.
	Config json.RawMessage `json:"config,omitempty"`
}

// ImagePruneResult says what image prune removed.
type ImagePruneResult struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

// ImagePull makes an image from a container image, reporting download
// progress (bytes in Done/Total) and stages to onEvent.
func (c *Client) ImagePull(ctx context.Context, req ImagePullRequest, onEvent func(Event)) (Image, error) {
	var out Image
	err := c.Call(ctx, MethodImagePull, req, &out, onEvent)
	return out, err
}

// ImagePrune removes cached blobs no image was made from.
func (c *Client) ImagePrune(ctx context.Context) (ImagePruneResult, error) {
	var out ImagePruneResult
	err := c.Call(ctx, MethodImagePrune, struct{}{}, &out, nil)
	return out, err
}
