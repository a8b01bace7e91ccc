// Command junitcheck checks a JUnit XML report that gotestsum wrote: its
// counts agree with its testcases, no testcase failed or is listed twice, and
// every passing testcase carries the properties and artifact files asked for.
// The main job runs it so that a report that lost its evidence fails the job.
//
//	junitcheck -min-passed 5 -props dut.name,dut.driver -files console.log out/junit.xml
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/testjson"
)

func main() {
	minPassed := flag.Int("min-passed", 1, "fail unless at least this many testcases passed")
	props := flag.String("props", "", "comma-separated properties every passing testcase must carry")
	files := flag.String("files", "", "comma-separated files every passing testcase's artifacts directory must hold")
	propsFor := flag.String("props-for", "", "a regexp: only the passing testcases whose name it matches must carry -props and -files (default: all)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: junitcheck [flags] JUNIT.xml")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "junitcheck:", err)
		os.Exit(2)
	}
	defer f.Close()
	j, err := testjson.ParseJUnit(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "junitcheck:", err)
		os.Exit(2)
	}
	req := testjson.Requirements{MinPassed: *minPassed, Properties: split(*props), ArtifactFiles: split(*files)}
	if *propsFor != "" {
		re, err := regexp.Compile(*propsFor)
		if err != nil {
			fmt.Fprintln(os.Stderr, "junitcheck: -props-for:", err)
			os.Exit(2)
		}
		req.PropsFor = re
	}
	if err := j.Check(req); err != nil {
		fmt.Fprintf(os.Stderr, "junitcheck: %s does not hold what it should:\n%v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	n := 0
	for _, s := range j.Suites {
		n += len(s.Cases)
	}
	fmt.Printf("junitcheck: %s: %d testcases in %d suites, counts consistent, properties and artifacts present\n", flag.Arg(0), n, len(j.Suites))
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
