// Package inline copies a shell script into a Tekton YAML file as the literal
// block scalar of its one `script: |` key, so that a step's script and the
// file it lives in stay byte for byte equal.
package inline

import (
	"errors"
	"fmt"
	"strings"
)

// Inline returns yaml with the block of its `script: |` key replaced by
// script. The YAML must hold exactly one line `script: |`; every line after it
// that is empty or indented deeper than the key is replaced. The script must
// end with exactly one newline (what a `|` block scalar yields), must not
// start with a space and must not hold a line of only blanks, which YAML
// would not keep.
func Inline(yaml, script []byte) ([]byte, error) {
	s := string(script)
	if !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") {
		return nil, errors.New("the script must end with exactly one newline")
	}
	body := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range body {
		if l != "" && strings.TrimLeft(l, " \t") == "" {
			return nil, fmt.Errorf("script line %d holds only blanks, which a YAML block scalar does not keep", i+1)
		}
	}
	if len(body) > 0 && strings.HasPrefix(body[0], " ") {
		return nil, errors.New("the script's first line must not start with a space")
	}

	lines := strings.SplitAfter(string(yaml), "\n")
	at, indent := -1, 0
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.TrimLeft(t, " ") == "script: |" {
			if at >= 0 {
				return nil, errors.New("more than one `script: |` line")
			}
			at, indent = i, len(t)-len(strings.TrimLeft(t, " "))
		}
	}
	if at < 0 {
		return nil, errors.New("no `script: |` line")
	}
	end := at + 1
	for end < len(lines) {
		t := strings.TrimRight(lines[end], "\r\n")
		if t != "" && len(t)-len(strings.TrimLeft(t, " ")) <= indent {
			break
		}
		end++
	}
	pad := strings.Repeat(" ", indent+2)
	var b strings.Builder
	for _, l := range lines[:at+1] {
		b.WriteString(l)
	}
	for _, l := range body {
		if l != "" {
			b.WriteString(pad)
			b.WriteString(l)
		}
		b.WriteString("\n")
	}
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return []byte(b.String()), nil
}
