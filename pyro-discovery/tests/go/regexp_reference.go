// Reference for tests/go_reference.rs: for each JSON line {re, in, tpl} on stdin, compiles
// `^(?s:re)$` with Go's regexp (as Prometheus and Alloy do), matches `in`, expands `tpl` with
// Regexp.ExpandString, and maps `in` with strings.ToUpper/ToLower; prints one JSON line each.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

type Case struct {
	Re  string `json:"re"`
	In  string `json:"in"`
	Tpl string `json:"tpl"`
}

type Result struct {
	Ok    bool   `json:"ok"`
	Match bool   `json:"match"`
	Out   string `json:"out"`
	Upper string `json:"upper"`
	Lower string `json:"lower"`
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var c Case
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r := Result{Upper: strings.ToUpper(c.In), Lower: strings.ToLower(c.In)}
		re, err := regexp.Compile("^(?s:" + c.Re + ")$")
		if err == nil {
			r.Ok = true
			if m := re.FindStringSubmatchIndex(c.In); m != nil {
				r.Match = true
				r.Out = string(re.ExpandString(nil, c.Tpl, c.In, m))
			}
		}
		enc.Encode(r)
	}
}
