package oci

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// blobRanger reads a repository's blobs from an offset with HTTP Range
// requests (the distribution API allows them on GET /v2/<repo>/blobs/<d>;
// go-containerregistry only reads whole blobs), so a download cut short
// resumes where it stopped. Its authenticated transport (the registry's
// token handshake) is made on first use: most pulls never resume.
type blobRanger struct {
	repo   name.Repository
	auth   authn.Authenticator
	base   http.RoundTripper
	client *http.Client
}

func newBlobRanger(repo name.Repository, opts FetchOptions) *blobRanger {
	r := &blobRanger{repo: repo, auth: authn.Anonymous, base: opts.Transport}
	if opts.Auth != nil {
		r.auth = authn.FromConfig(*opts.Auth)
	}
	if r.base == nil {
		r.base = remote.DefaultTransport
	}
	return r
}

// opener is OpenAt for blob h.
func (r *blobRanger) opener(h v1.Hash) OpenAt {
	return func(ctx context.Context, offset int64) (io.ReadCloser, bool, error) {
		return r.openAt(ctx, h, offset)
	}
}

func (r *blobRanger) openAt(ctx context.Context, h v1.Hash, offset int64) (io.ReadCloser, bool, error) {
	if r.client == nil {
		rt, err := transport.NewWithContext(ctx, r.repo.Registry, r.auth, r.base, []string{r.repo.Scope(transport.PullScope)})
		if err != nil {
			return nil, false, fmt.Errorf("connect to %s: %w", r.repo.RegistryStr(), err)
		}
		r.client = &http.Client{Transport: rt}
	}
	u := url.URL{Scheme: r.repo.Scheme(), Host: r.repo.RegistryStr(), Path: "/v2/" + r.repo.RepositoryStr() + "/blobs/" + h.String()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)):
		return resp.Body, true, nil
	case resp.StatusCode == http.StatusOK:
		return resp.Body, false, nil // no Range support: the whole blob
	default:
		_ = resp.Body.Close()
		return nil, false, fmt.Errorf("the registry answered %q (Content-Range %q) to a request for blob %s from byte %d", resp.Status, resp.Header.Get("Content-Range"), h, offset)
	}
}
