package store

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func testImage(name string) Image {
	return Image{
		ID:              NewID(),
		Name:            name,
		KernelPath:      "/var/lib/banger/images/" + name + "/vmlinux",
		InitrdPath:      "/var/lib/banger/images/" + name + "/initrd.img",
		RootfsPath:      "/var/lib/banger/images/" + name + "/rootfs.ext4",
		RootfsSizeBytes: 2 << 30,
		Source:          ImageSourceImport,
	}
}

func TestImageCRUD(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()

	im := testImage("debian")
	im.Meta = json.RawMessage(`{"digest":"sha256:abc"}`)
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "debian")
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.IsZero() || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want a UTC time from the clock", got.CreatedAt)
	}
	want := im
	want.CreatedAt = got.CreatedAt
	if !equalImage(got, want) {
		t.Errorf("GetImage = %+v\nwant        %+v", got, want)
	}
	byID, err := s.GetImage(ctx, im.ID)
	if err != nil || byID.Name != "debian" {
		t.Errorf("GetImage(id) = %+v, %v", byID, err)
	}

	// An explicit creation time is kept, converted to UTC.
	alpine := testImage("alpine")
	alpine.CreatedAt = time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	alpine.InitrdPath = ""
	if err := s.CreateImage(ctx, alpine); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := imageNames(list); !slices.Equal(names, []string{"alpine", "debian"}) {
		t.Errorf("ListImages names = %v, want sorted by name", names)
	}
	if !list[0].CreatedAt.Equal(alpine.CreatedAt) || list[0].CreatedAt.Location() != time.UTC {
		t.Errorf("alpine CreatedAt = %v, want %v in UTC", list[0].CreatedAt, alpine.CreatedAt)
	}
	if string(list[0].Meta) != "{}" {
		t.Errorf("empty Meta stored as %q, want {}", list[0].Meta)
	}

	if err := s.DeleteImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetImage(ctx, "debian"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetImage after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteImage(ctx, im.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteImage: %v, want ErrNotFound", err)
	}
}

func TestCreateImageAlreadyExists(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	im := testImage("debian")
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}

	sameName := testImage("debian")
	err := s.CreateImage(ctx, sameName)
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v, want ErrAlreadyExists", err)
	}
	if want := `store: create image "debian": already exists: another image has the same name`; err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}

	sameID := testImage("other")
	sameID.ID = im.ID
	if err := s.CreateImage(ctx, sameID); !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), "same id") {
		t.Errorf("duplicate id: %v, want ErrAlreadyExists naming the id", err)
	}
}

func TestCreateImageValidates(t *testing.T) {
	s, _ := openTestStore(t)
	for name, mutate := range map[string]func(*Image){
		"no id":        func(im *Image) { im.ID = "" },
		"no name":      func(im *Image) { im.Name = "" },
		"no kernel":    func(im *Image) { im.KernelPath = "" },
		"no rootfs":    func(im *Image) { im.RootfsPath = "" },
		"no source":    func(im *Image) { im.Source = "" },
		"negative":     func(im *Image) { im.RootfsSizeBytes = -1 },
		"bad metadata": func(im *Image) { im.Meta = json.RawMessage(`{nope`) },
	} {
		im := testImage("x")
		mutate(&im)
		if err := s.CreateImage(context.Background(), im); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if list, _ := s.ListImages(context.Background()); len(list) != 0 {
		t.Errorf("invalid images were stored: %v", imageNames(list))
	}
}

func TestDeleteImageRefusedWhileInUse(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	im := testImage("debian")
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	var vms []VM
	for _, name := range []string{"web", "dev"} {
		vm := testVM(name)
		vm.ImageID, vm.ImageName = im.ID, im.Name
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}

	err := s.DeleteImage(ctx, im.ID)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("DeleteImage: %v, want ErrInUse", err)
	}
	var inUse *InUseError
	if !errors.As(err, &inUse) || !slices.Equal(inUse.UsedBy, []string{"dev", "web"}) {
		t.Errorf("InUseError = %+v, want UsedBy [dev web]", inUse)
	}
	if want := `image "debian" is in use by vm "dev", "web"`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := s.GetImage(ctx, im.ID); err != nil {
		t.Errorf("image gone after refused delete: %v", err)
	}

	for _, vm := range vms {
		if err := s.DeleteVM(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteImage(ctx, im.ID); err != nil {
		t.Errorf("DeleteImage once unused: %v", err)
	}
}

// The schema's ON DELETE RESTRICT is the backstop behind DeleteImage's check.
func TestImageForeignKeyIsEnforced(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	im := testImage("debian")
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	vm := testVM("dev")
	vm.ImageID = im.ID
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, im.ID)
	if !isForeignKeyViolation(err) {
		t.Errorf("raw delete of a used image: %v, want a foreign key violation", err)
	}
}

func equalImage(a, b Image) bool {
	return a.ID == b.ID && a.Name == b.Name && a.KernelPath == b.KernelPath &&
		a.InitrdPath == b.InitrdPath && a.RootfsPath == b.RootfsPath &&
		a.RootfsSizeBytes == b.RootfsSizeBytes && a.Source == b.Source &&
		a.CreatedAt.Equal(b.CreatedAt) && string(a.Meta) == string(b.Meta)
}

func imageNames(ims []Image) []string {
	var out []string
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out
}
