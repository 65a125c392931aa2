// Package rendezvouspb holds the protobuf wire types and gRPC stubs of the
// rendezvous service, generated from rendezvous.proto by `go generate
// ./internal/rendezvous` (protoc-gen-go v1.35.1, protoc-gen-go-grpc v1.5.1).
// Use package rendezvous, not these types, from other code.
package rendezvouspb
