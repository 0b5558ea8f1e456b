// Package doctor runs banger's health checks. Each check says PASS, WARN or
// FAIL with a one-line summary and detail lines a person can act on.
package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Status is a check's verdict.
type Status string

// The three verdicts. FAIL makes `banger doctor` exit non-zero.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is the outcome of one check.
type Result struct {
	Name    string   `json:"name"`
	Status  Status   `json:"status"`
	Summary string   `json:"summary"`
	Details []string `json:"details,omitempty"`
}

// Check is one named health check.
type Check struct {
	Name string
	Run  func(ctx context.Context) Result
}

// Report is every check's result, in order.
type Report struct {
	Results []Result `json:"results"`
}

// Run runs checks in order. A check that panics is reported as FAIL rather
// than taking doctor down, since doctor is what people run when things break.
func Run(ctx context.Context, checks []Check) Report {
	var r Report
	for _, c := range checks {
		r.Results = append(r.Results, runOne(ctx, c))
	}
	return r
}

func runOne(ctx context.Context, c Check) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = Result{Name: c.Name, Status: Fail, Summary: fmt.Sprintf("check crashed: %v", p)}
		}
	}()
	res = c.Run(ctx)
	res.Name = c.Name
	return res
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Render writes the report as an aligned table with indented details.
func (r Report) Render(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", res.Status, res.Name, res.Summary)
		for _, d := range res.Details {
			fmt.Fprintf(tw, "\t\t  %s\n", d)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var pass, warn, fail int
	for _, res := range r.Results {
		switch res.Status {
		case Pass:
			pass++
		case Warn:
			warn++
		case Fail:
			fail++
		}
	}
	_, err := fmt.Fprintf(w, "\n%d passed, %d warnings, %d failed\n", pass, warn, fail)
	return err
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
