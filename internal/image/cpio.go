package image

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks as an
// initramfs. It is written here rather than taken from a library because an
// initramfs needs device nodes (rdev), fixed timestamps for reproducible
// output and nothing else.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	off  int64
	seen map[string]bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1, seen: map[string]bool{}}
}

// cpio mode bits (from <sys/stat.h>, as cpio stores them).
const (
	cpioDir     = 0o040000
	cpioReg     = 0o100000
	cpioSymlink = 0o120000
	cpioChar    = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32) error {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	if c.seen[name] {
		return fmt.Errorf("initrd entry %s written twice", name)
	}
	c.seen[name] = true
	if size > 0xffffffff {
		return fmt.Errorf("initrd entry %s is larger than cpio allows", name)
	}
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.ino++
	if err := c.write([]byte(hdr + name + "\x00")); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

// pad aligns to 4 bytes, as newc requires after names and file data.
func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	return c.header(name, cpioDir|uint32(perm.Perm()), 0, 0, 0)
}

// File adds a regular file with the given content.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	if err := c.header(name, cpioReg|uint32(perm.Perm()), int64(len(data)), 0, 0); err != nil {
		return err
	}
	if err := c.write(data); err != nil {
		return err
	}
	return c.pad()
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	if err := c.header(name, cpioSymlink|0o777, int64(len(target)), 0, 0); err != nil {
		return err
	}
	if err := c.write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.header(name, cpioChar|uint32(perm.Perm()), 0, major, minor)
}

// Close writes the trailer and flushes; the underlying writer stays open.
func (c *cpioWriter) Close() error {
	if err := c.header("TRAILER!!!", 0, 0, 0, 0); err != nil {
		return err
	}
	return c.w.Flush()
}
