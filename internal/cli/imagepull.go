package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/termtext"
)

// pullFlags are the options `image pull` and the container forms of
// `image import` share.
type pullFlags struct {
	size string
}

func (f *pullFlags) add(cmd *cobra.Command, req *api.ImagePullRequest) {
	cmd.Flags().StringVar(&req.Platform, "platform", "", "os/arch[/variant] to pick from a multi-platform image (default linux/amd64)")
	cmd.Flags().StringVar(&f.size, "size", "", "room to add to the root file system beyond the image's files, e.g. +1G (sparse)")
	cmd.Flags().StringVar(&req.Kernel, "kernel", "", "kernel: microvm, debian or a file (default: the built microVM kernel, else Debian's)")
	cmd.Flags().StringVar(&req.BootFrom, "boot-from", "", "boot with the kernel and initrd of this existing image (nothing is fetched for them)")
}

// apply parses the size flag into req.
func (f *pullFlags) apply(req *api.ImagePullRequest) error {
	if f.size == "" {
		return nil
	}
	s, err := config.ParseSize(strings.TrimPrefix(f.size, "+"))
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	req.SizeBytes = int64(s)
	return nil
}

func newImagePullCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req api.ImagePullRequest
		f   pullFlags
	)
	cmd := &cobra.Command{
		Use:   "pull REF [--name NAME]",
		Short: "Make an image from a container image in a registry",
		Long: `Fetch a container image (e.g. debian:12, ghcr.io/org/app@sha256:…) and make a
bootable image of it: its layers become an ext4 root file system, booted
with banger's kernel, initrd, init and guest agent. The image's Env,
WorkingDir and User become the defaults of ` + "`vm exec`" + ` in its VMs.

Blobs are cached by digest and shared by all images; an interrupted pull
resumes with the layers it had finished. ` + "`banger image prune`" + ` drops blobs
no image uses. Credentials come from your Docker or Podman login
(~/.docker/config.json, its credential helpers, containers/auth.json) and
are passed to the daemon for this pull only.`,
		Example: `  banger image pull debian:12
  banger image pull ghcr.io/org/app:1.2 --name app --size +2G
  banger image pull localhost:5000/tools --insecure-registry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			if err := f.apply(&req); err != nil {
				return err
			}
			auth, err := registryAuth(req.Ref, req.Insecure)
			if err != nil {
				return err
			}
			req.Auth = auth
			return app.pullImage(cmd, g, req)
		},
	}
	f.add(cmd, &req)
	cmd.Flags().StringVar(&req.Name, "name", "", "the new image's name (default: from the reference, e.g. debian-12)")
	cmd.Flags().BoolVar(&req.Insecure, "insecure-registry", false, "allow plain HTTP to the registry")
	addJSONFlag(cmd, g)
	return cmd
}

// registryAuth reads the invoking user's credential for ref's registry
// from their Docker/Podman config and helpers; nil when they have none.
// The CLI reads it, not the daemon, so the daemon never sees its owner's
// (or anybody's) credential files, and gets the secret only for the pull.
func registryAuth(ref string, insecure bool) (*api.RegistryAuth, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("%q is not an image reference (e.g. debian:12 or ghcr.io/org/app@sha256:…): %w", ref, err)
	}
	a, err := authn.DefaultKeychain.Resolve(r.Context())
	if err != nil {
		return nil, fmt.Errorf("read your registry credentials for %s: %w", r.Context().RegistryStr(), err)
	}
	if a == authn.Anonymous {
		return nil, nil
	}
	cfg, err := a.Authorization()
	if err != nil {
		return nil, fmt.Errorf("get your registry credential for %s: %w", r.Context().RegistryStr(), err)
	}
	return &api.RegistryAuth{Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken}, nil
}

// pullImage sends the request, showing download progress in bytes.
func (app *App) pullImage(cmd *cobra.Command, g *globalFlags, req api.ImagePullRequest) error {
	return app.withClient(cmd, g, func(c *api.Client) error {
		im, err := c.ImagePull(cmd.Context(), req, pullProgress(app.Stderr))
		if err != nil {
			return err
		}
		return app.emit(g, im, func() error {
			digest := ""
			if im.Origin != nil {
				digest = " " + im.Origin.Digest
			}
			fmt.Fprintf(app.Stdout, "%s: made from %s%s (%s)\n", im.Name, termtext.Line(req.Ref+req.OCILayout+req.DockerArchive), digest, config.ByteSize(im.SizeBytes))
			return nil
		})
	})
}

func pullProgress(w io.Writer) func(api.Event) {
	return func(ev api.Event) {
		if ev.Total > 0 {
			fmt.Fprintf(w, "%s: %s of %s\n", termtext.Line(ev.Message), config.ByteSize(ev.Done), config.ByteSize(ev.Total))
			return
		}
		fmt.Fprintln(w, termtext.Line(ev.Message))
	}
}

// importContainer is `image import NAME --oci-layout DIR[:TAG]` or
// `--docker-archive FILE`: a pull from a local file.
func (app *App) importContainer(cmd *cobra.Command, g *globalFlags, req api.ImagePullRequest, f *pullFlags) error {
	if err := f.apply(&req); err != nil {
		return err
	}
	for _, p := range []*string{&req.OCILayout, &req.DockerArchive} {
		if *p == "" {
			continue
		}
		dir, tag := *p, ""
		if p == &req.OCILayout {
			if i := strings.LastIndex(dir, ":"); i >= 0 && !strings.Contains(dir[i+1:], "/") {
				dir, tag = dir[:i], dir[i:]
			}
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		*p = abs + tag
	}
	return app.pullImage(cmd, g, req)
}

func newImagePruneCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Drop cached container image blobs that no image was made from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				res, err := c.ImagePrune(cmd.Context())
				if err != nil {
					return err
				}
				return app.emit(g, res, func() error {
					fmt.Fprintf(app.Stdout, "removed %d blobs (%s)\n", res.Blobs, config.ByteSize(res.Bytes))
					return nil
				})
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

// renderOrigin adds an image's container origin to image show.
func renderOrigin(row func(k, v string), o *api.ImageOrigin) {
	if o == nil {
		return
	}
	row("from", o.Ref)
	row("digest", o.Digest)
	row("platform", o.Platform)
	cfg := containerDefaults(o.Config)
	row("env", strings.Join(cfg.Env, " "))
	row("workdir", cfg.WorkingDir)
	row("user", cfg.User)
	row("entrypoint", strings.Join(cfg.Entrypoint, " "))
	row("cmd", strings.Join(cfg.Cmd, " "))
}

// containerRunConfig is what image show lists of a container image's config.
type containerRunConfig struct {
	Env        []string `json:"Env"`
	WorkingDir string   `json:"WorkingDir"`
	User       string   `json:"User"`
	Entrypoint []string `json:"Entrypoint"`
	Cmd        []string `json:"Cmd"`
}

func containerDefaults(raw json.RawMessage) containerRunConfig {
	var cfg struct {
		Config containerRunConfig `json:"config"`
	}
	_ = json.Unmarshal(raw, &cfg) // a config banger stored parsed when pulled
	return cfg.Config
}
