package cli

import (
	"bufio"
	"io"
	"text/tabwriter"
)

// table is the CLI's aligned-columns writer: a tabwriter whose output
// reaches w in one write at Flush. A bare tabwriter writes every cell and
// every run of padding separately, which on an unbuffered stdout is a
// system call each (≈1,600 for `vm list` of 100 VMs, slow on a terminal).
type table struct {
	*tabwriter.Writer
	buf *bufio.Writer
}

// newTable returns a table writing to w, with the CLI's column spacing.
func newTable(w io.Writer) *table {
	buf := bufio.NewWriterSize(w, 64<<10)
	return &table{Writer: tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0), buf: buf}
}

// Flush aligns what was written and hands it to w.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	return t.buf.Flush()
}
