package dataparallel

import "strconv"

// EventKind says what happened in an Event.
type EventKind int

const (
	// EventReady: Ready was called for Names[0] (or Synchronize made it ready).
	EventReady EventKind = iota
	// EventStart: the allreduce Op carrying Names was started; Done is
	// closed when it has finished.
	EventStart
	// EventSynchronized: Synchronize returned; Communicated says whether
	// this pass communicated (the last pass of an accumulation window).
	EventSynchronized
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventStart:
		return "start"
	case EventSynchronized:
		return "synchronized"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one step of the helper's work, reported to WithObserver.
type Event struct {
	Kind         EventKind
	Names        []string        // the gradients concerned
	Op           string          // EventStart: the collective's name
	Pass         int             // backward pass within the accumulation window, from 1
	Done         <-chan struct{} // EventStart: closed when the allreduce finished
	Communicated bool            // EventSynchronized
}

// Stats counts the helper's work since New.
type Stats struct {
	Passes     int64 // backward passes synchronized
	Allreduces int64 // collectives started (a group counts once)
	WireBytes  int64 // bytes of gradient data handed to the collectives
}
