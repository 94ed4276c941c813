package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/internal/safetext"
)

// Output formats of -o/--output, as in kubectl: text for people, json for
// scripts, yaml where Kubernetes objects are written.
const (
	formatText = "text"
	formatJSON = "json"
	formatYAML = "yaml"
)

// addOutputFlag adds -o/--output to cmd, taking one of formats (the first
// is the default).
func addOutputFlag(cmd *cobra.Command, p *string, formats ...string) {
	cmd.Flags().StringVarP(p, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	completeValues(cmd, "output", formats...)
}

// completeValues makes the shell complete flag with values, and no file.
func completeValues(cmd *cobra.Command, flag string, values ...string) {
	cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
}

// checkFormat refuses an -o value that is not one of formats.
func checkFormat(value string, formats ...string) error {
	if slices.Contains(formats, value) {
		return nil
	}
	return fmt.Errorf("-o %q: want %s", value, orList(formats))
}

// orList is "a, b or c".
func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// writeJSON writes v indented, with what a terminal acts on escaped
// ([safetext.JSON]: the same data), and a final newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(safetext.JSON(b), '\n'))
	return err
}
