package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Image sources recorded in Image.Source.
const (
	ImageSourceImport = "import"
	ImageSourceBuild  = "build"
	// ImageSourceOCI is an image made from a container image (pull, or
	// import of an OCI layout or docker archive).
	ImageSourceOCI = "oci"
)

// Image is a bootable image: kernel, optional initrd and a root filesystem
// that VMs clone.
type Image struct {
	// ID is a unique identifier (NewID); Name is what users type.
	ID   string
	Name string

	KernelPath      string
	InitrdPath      string // "" when the image boots without an initrd
	RootfsPath      string
	RootfsSizeBytes int64
	// Source says how the image arrived: ImageSourceImport or
	// ImageSourceBuild.
	Source string
	// CreatedAt is set from the store's clock when zero.
	CreatedAt time.Time
	// Meta is free-form JSON owned by the image package (build recipe,
	// upstream digest, ...). Empty means {}.
	Meta json.RawMessage
	// Origin is set for images made from container images.
	Origin ImageOrigin
}

// ImageOrigin is where an image made from a container image came from.
type ImageOrigin struct {
	// Ref is the reference or file as the user named it; Digest the
	// manifest's digest; Platform the os/arch picked.
	Ref      string
	Digest   string
	Platform string
	// Config is the container image's config file (JSON); empty means {}.
	Config json.RawMessage
	// Blobs are the cached blobs (digests) the image was made from.
	Blobs []string
}

const imageColumns = `id, name, kernel_path, initrd_path, rootfs_path, rootfs_size_bytes, source, created_at, meta,
	source_ref, source_digest, source_platform, config, blobs`

func scanImage(sc interface{ Scan(...any) error }) (Image, error) {
	var (
		im      Image
		created string
		meta    string
		config  string
		blobs   string
	)
	if err := sc.Scan(&im.ID, &im.Name, &im.KernelPath, &im.InitrdPath, &im.RootfsPath,
		&im.RootfsSizeBytes, &im.Source, &created, &meta,
		&im.Origin.Ref, &im.Origin.Digest, &im.Origin.Platform, &config, &blobs); err != nil {
		return Image{}, err
	}
	im.Origin.Config = json.RawMessage(config)
	if err := json.Unmarshal([]byte(blobs), &im.Origin.Blobs); err != nil {
		return Image{}, fmt.Errorf("image %s: blobs column: %w", im.ID, err)
	}
	var err error
	if im.CreatedAt, err = parseTime(created); err != nil {
		return Image{}, err
	}
	im.Meta = json.RawMessage(meta)
	return im, nil
}

// jsonText validates a JSON column value; empty means "{}".
func jsonText(field string, v json.RawMessage) (string, error) {
	if len(v) == 0 {
		return "{}", nil
	}
	if !json.Valid(v) {
		return "", fmt.Errorf("%w: %s is not valid JSON", ErrInvalid, field)
	}
	return string(v), nil
}

// CreateImage stores a new image. ID, Name, KernelPath, RootfsPath and
// Source are required; a taken ID or name gives ErrAlreadyExists.
func (s *Store) CreateImage(ctx context.Context, im Image) error {
	if err := s.createImage(ctx, im); err != nil {
		return fmt.Errorf("store: create image %q: %w", im.Name, err)
	}
	return nil
}

func (s *Store) createImage(ctx context.Context, im Image) error {
	switch {
	case im.ID == "":
		return fmt.Errorf("%w: id is required", ErrInvalid)
	case im.Name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case im.KernelPath == "":
		return fmt.Errorf("%w: kernel path is required", ErrInvalid)
	case im.RootfsPath == "":
		return fmt.Errorf("%w: rootfs path is required", ErrInvalid)
	case im.Source == "":
		return fmt.Errorf("%w: source is required", ErrInvalid)
	case im.RootfsSizeBytes < 0:
		return fmt.Errorf("%w: rootfs size %d is negative", ErrInvalid, im.RootfsSizeBytes)
	}
	meta, err := jsonText("meta", im.Meta)
	if err != nil {
		return err
	}
	config, err := jsonText("config", im.Origin.Config)
	if err != nil {
		return err
	}
	blobs, err := json.Marshal(im.Origin.Blobs)
	if err != nil || im.Origin.Blobs == nil {
		blobs = []byte("[]")
	}
	created := im.CreatedAt
	if created.IsZero() {
		created = s.nowUTC()
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			im.ID, im.Name, im.KernelPath, im.InitrdPath, im.RootfsPath, im.RootfsSizeBytes,
			im.Source, formatTime(created), meta,
			im.Origin.Ref, im.Origin.Digest, im.Origin.Platform, config, string(blobs))
		if isUniqueViolation(err) {
			return alreadyExists(err, "image")
		}
		return err
	})
}

// GetImage returns the image whose ID or name is nameOrID. An ID match wins
// over a name match, so lookups by ID are never hijacked by a name.
func (s *Store) GetImage(ctx context.Context, nameOrID string) (Image, error) {
	row := s.db.QueryRowContext(ctx,
		`SELECT `+imageColumns+` FROM images WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1`, nameOrID)
	im, err := scanImage(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("store: get image %q: %w", nameOrID, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("store: get image %q: %w", nameOrID, err)
	}
	return im, nil
}

// ListImages returns every image, ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list images: %w", err)
		}
		out = append(out, im)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list images: %w", err)
	}
	return out, nil
}

// DeleteImage removes the image with this ID. While VMs reference it, it
// refuses with an *InUseError (wrapping ErrInUse) naming them, so the user
// learns which VMs to delete first.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM images WHERE id = ?`, id).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		users, err := vmNamesUsingImage(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &InUseError{What: "image", Name: name, UsedBy: users}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
		if isForeignKeyViolation(err) {
			// Unreachable while the check above holds the write lock; kept
			// so the schema's RESTRICT still reads as ErrInUse.
			return &InUseError{What: "image", Name: name}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete image %q: %w", id, err)
	}
	return nil
}

func vmNamesUsingImage(ctx context.Context, q queryer, imageID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM vms WHERE image_id = ? ORDER BY name`, imageID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
