package main

import "context"

// localComm is a world of one: every collective leaves the buffer as it is.
type localComm struct{}

type doneWaiter struct{}

func (doneWaiter) Wait(context.Context) error { return nil }

func (localComm) Rank() int                                               { return 0 }
func (localComm) Size() int                                               { return 1 }
func (localComm) Broadcast(context.Context, string, []float32, int) error { return nil }
func (localComm) AverageAsync(context.Context, string, []float32) Waiter  { return doneWaiter{} }
func (localComm) Sum64(context.Context, string, []float64) error          { return nil }
func (localComm) Barrier(context.Context) error                           { return nil }
