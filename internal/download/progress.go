package download

import (
	"fmt"
	"io"
	"time"

	"github.com/banger-dev/banger/internal/config"
)

// progressBar renders one self-overwriting line of download progress.
// Redraws are throttled so a fast local download does not flood a slow
// terminal or a log file.
type progressBar struct {
	w        io.Writer
	name     string
	total    int64 // -1 when the server sent no length
	done     int64
	now      func() time.Time
	lastDraw time.Time
	drawn    bool
}

const redrawEvery = 200 * time.Millisecond

func newProgressBar(w io.Writer, name string, total int64, now func() time.Time) *progressBar {
	return &progressBar{w: w, name: name, total: total, now: now}
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if t := p.now(); !p.drawn || t.Sub(p.lastDraw) >= redrawEvery {
		p.lastDraw = t
		p.draw()
	}
	return len(b), nil
}

// finish draws the final state and ends the line.
func (p *progressBar) finish(ok bool) {
	p.draw()
	if ok {
		fmt.Fprintln(p.w, " done")
	} else {
		fmt.Fprintln(p.w, " failed")
	}
}

func (p *progressBar) draw() {
	p.drawn = true
	if p.total <= 0 {
		fmt.Fprintf(p.w, "\rdownloading %s  %s", p.name, config.FormatBytes(p.done))
		return
	}
	const width = 30
	frac := float64(p.done) / float64(p.total)
	if frac > 1 {
		frac = 1
	}
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		if i < filled {
			bar[i] = '='
		} else {
			bar[i] = ' '
		}
	}
	fmt.Fprintf(p.w, "\rdownloading %s [%s] %3.0f%% %s / %s", p.name, bar, frac*100, config.FormatBytes(p.done), config.FormatBytes(p.total))
}
