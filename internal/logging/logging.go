// Package logging builds the zap loggers gorun and the workers share: quiet
// by default (warnings and errors), debug with --verbose.
package logging

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a console logger on stderr at level ("debug", "info", "warn",
// "error"; "" means warn).
func New(level string) (*zap.Logger, error) {
	lvl := zapcore.WarnLevel
	if level != "" {
		if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
			return nil, fmt.Errorf("unknown log level %q (want debug, info, warn, error)", level)
		}
	}
	cfg := zap.NewDevelopmentConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Development = false
	cfg.DisableStacktrace = true
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.OutputPaths = []string{"stderr"}
	return cfg.Build()
}
