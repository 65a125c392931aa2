//go:build !linux

package main

import "io"

// isTerminal reports false off Linux: no colours, progress as lines.
func isTerminal(io.Writer) bool { return false }
