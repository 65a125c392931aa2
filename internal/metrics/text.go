package metrics

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// ContentType is the text exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteTo renders every family in the text exposition format 0.0.4,
// sorted by name.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	r.render(&buf)
	return buf.WriteTo(w)
}

func (r *Registry) render(b *bytes.Buffer) {
	r.mu.RLock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		if len(f.series) > 0 {
			fams = append(fams, f)
		}
	}
	// Series slices only grow by append under the lock; a copy of each
	// header is enough to render without holding it while collectors run.
	type view struct {
		f      *family
		series []*series
	}
	views := make([]view, len(fams))
	for i, f := range fams {
		views[i] = view{f, f.series[:len(f.series):len(f.series)]}
	}
	r.mu.RUnlock()
	sort.Slice(views, func(i, j int) bool { return views[i].f.name < views[j].f.name })

	for _, v := range views {
		f := v.f
		b.WriteString("# HELP ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		b.WriteString(escapeHelp(f.help))
		b.WriteString("\n# TYPE ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		b.WriteString(f.kind.String())
		b.WriteByte('\n')
		for _, s := range v.series {
			switch m := s.value.(type) {
			case *Counter:
				sample(b, f.name, "", s.labels, "", strconv.FormatUint(m.Value(), 10))
			case *Gauge:
				sample(b, f.name, "", s.labels, "", formatFloat(m.Value()))
			case func() float64:
				sample(b, f.name, "", s.labels, "", formatFloat(m()))
			case *Histogram:
				cum, sum := m.snapshot()
				for i, n := range cum {
					le := "+Inf"
					if i < len(m.upper) {
						le = formatFloat(m.upper[i])
					}
					sample(b, f.name, "_bucket", s.labels, `le="`+le+`"`, strconv.FormatUint(n, 10))
				}
				sample(b, f.name, "_sum", s.labels, "", formatFloat(sum))
				sample(b, f.name, "_count", s.labels, "", strconv.FormatUint(cum[len(cum)-1], 10))
			}
		}
	}
}

func sample(b *bytes.Buffer, name, suffix, labels, extra, value string) {
	b.WriteString(name)
	b.WriteString(suffix)
	if labels != "" || extra != "" {
		b.WriteByte('{')
		b.WriteString(labels)
		if labels != "" && extra != "" {
			b.WriteByte(',')
		}
		b.WriteString(extra)
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(value)
	b.WriteByte('\n')
}

// renderLabels renders const then own labels once, at registration.
func renderLabels(consts, own []Label) string {
	var sb strings.Builder
	for _, ls := range [][]Label{consts, own} {
		for _, l := range ls {
			if sb.Len() > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(l.Name)
			sb.WriteString(`="`)
			sb.WriteString(escapeLabelValue(l.Value))
			sb.WriteByte('"')
		}
	}
	return sb.String()
}

func formatLabels(ls []Label) string {
	if len(ls) == 0 {
		return ""
	}
	return "{" + renderLabels(nil, ls) + "}"
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string       { return helpEscaper.Replace(s) }
func escapeLabelValue(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Handler serves the registry on GET and HEAD.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method "+req.Method+" not allowed", http.StatusMethodNotAllowed)
			return
		}
		var buf bytes.Buffer
		r.render(&buf)
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		if req.Method == http.MethodGet {
			_, _ = buf.WriteTo(w)
		}
	})
}
