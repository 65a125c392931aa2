// Package logging builds the zap loggers gorun and the workers share: quiet
// by default (warnings and errors), one plain line per message for a
// person (NewLauncher's console format), or JSON for programs.
package logging

import (
	"os"

	"go.uber.org/zap"
)

// New returns the workers' logger on stderr at level ("debug", "info",
// "warn", "error"; "" means warn): one plain line per message, starting
// with "gorovod:" and without source positions, as gorun's own
// ("gorovod: warning: stalled collectives ...").
func New(level string) (*zap.Logger, error) {
	return NewLauncher(os.Stderr, LauncherOptions{Level: level, Name: "gorovod"})
}
