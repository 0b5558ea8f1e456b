package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// account is one /etc/passwd entry. The agent reads the files itself rather
// than use os/user: it is built without cgo (so os/user would read the same
// files anyway) and it needs the login shell, which os/user does not give.
type account struct {
	Name  string
	UID   int
	GID   int
	Home  string
	Shell string
}

// errNoUser is returned (wrapped) when an account does not exist.
var errNoUser = errors.New("no such user")

// userDB reads accounts from an /etc directory (the real guest's, always:
// processes run on the real system even when the agent's file root is a
// stand-in directory).
type userDB struct {
	passwd, group string
}

func systemUsers() userDB { return userDB{passwd: "/etc/passwd", group: "/etc/group"} }

func (db userDB) all() ([]account, error) {
	f, err := os.Open(db.passwd)
	if err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	defer f.Close()
	var out []account
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, account{Name: fields[0], UID: uid, GID: gid, Home: fields[5], Shell: fields[6]})
	}
	return out, sc.Err()
}

// lookup finds an account by name, or by number when name is all digits.
func (db userDB) lookup(name string) (account, error) {
	all, err := db.all()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return account{}, err
	}
	uid, numErr := strconv.Atoi(name)
	for _, a := range all {
		if a.Name == name || (numErr == nil && a.UID == uid) {
			return a, nil
		}
	}
	if name == "root" || name == "0" {
		// A minimal guest (busybox initramfs) may have no passwd at all;
		// root exists regardless.
		return rootAccount(), nil
	}
	return account{}, fmt.Errorf("%w %q in the guest", errNoUser, name)
}

// rootAccount stands in for a missing passwd entry of uid 0.
func rootAccount() account {
	return account{Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/sh"}
}

func (db userDB) byUID(uid int) (account, error) {
	return db.lookup(strconv.Itoa(uid))
}

// groups returns the supplementary group IDs of user (plus gid).
func (db userDB) groups(user string, gid int) []uint32 {
	out := []uint32{uint32(gid)}
	f, err := os.Open(db.group)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 {
			continue
		}
		id, err := strconv.Atoi(fields[2])
		if err != nil || id == gid {
			continue
		}
		for _, member := range strings.Split(fields[3], ",") {
			if member == user {
				out = append(out, uint32(id))
				break
			}
		}
	}
	return out
}

// loginUsers lists root and regular accounts (uid ≥ 1000, below nobody)
// that have a real shell: the accounts a person would log in as.
func (db userDB) loginUsers() []GuestUser {
	all, err := db.all()
	if err != nil {
		// No passwd (a minimal guest): root is the one account there is.
		root := rootAccount()
		return []GuestUser{{Name: root.Name, UID: root.UID, Home: root.Home}}
	}
	var out []GuestUser
	for _, a := range all {
		regular := a.UID >= 1000 && a.UID < 65534
		if (a.UID != 0 && !regular) || strings.HasSuffix(a.Shell, "nologin") || strings.HasSuffix(a.Shell, "/false") {
			continue
		}
		out = append(out, GuestUser{Name: a.Name, UID: a.UID, Home: a.Home})
	}
	return out
}
