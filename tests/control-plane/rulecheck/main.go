// rulecheck checks Prometheus rule files the way `promtool check rules` does, with the
// same packages of the same Prometheus release: rulefmt.ParseFile (strict YAML, known
// fields only, every expr parsed by the PromQL parser, `for`/`keep_firing_for`, label
// names, label and annotation templates) and promtool's duplicate-rule lint (a rule name
// with the same labels twice). promtool itself takes ~13 min to build cold here (it links
// every service discovery plugin and cloud SDK); this takes a fraction of that.
//
//	rulecheck FILE...
//
// Prints, as promtool does, "Checking FILE" and "  SUCCESS: N rules found" per file, or
// "  FAILED:" and the errors on stderr; exits 1 if any file failed.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: rulecheck FILE...")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	failed := false
	for _, f := range os.Args[1:] {
		fmt.Println("Checking", f)
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, p, logger)
		if len(errs) == 0 {
			errs = duplicates(rgs)
		}
		if len(errs) > 0 {
			failed = true
			fmt.Fprintln(os.Stderr, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e.Error())
			}
			continue
		}
		n := 0
		for _, g := range rgs.Groups {
			n += len(g.Rules)
		}
		fmt.Printf("  SUCCESS: %d rules found\n", n)
	}
	if failed {
		os.Exit(1)
	}
}

// duplicates is promtool's lint: two rules of the same name (record or alert) whose group
// and rule labels are the same.
func duplicates(rgs *rulefmt.RuleGroups) []error {
	seen := map[string]bool{}
	var errs []error
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			name := r.Record
			if name == "" {
				name = r.Alert
			}
			labels := map[string]string{}
			for k, v := range g.Labels {
				labels[k] = v
			}
			for k, v := range r.Labels {
				labels[k] = v
			}
			keys := make([]string, 0, len(labels))
			for k := range labels {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			key := name
			for _, k := range keys {
				key += "\x00" + k + "=" + labels[k]
			}
			if seen[key] {
				errs = append(errs, fmt.Errorf("duplicate rule: %s with labels %v", name, labels))
			}
			seen[key] = true
		}
	}
	return errs
}
