// Package proto is the wire contract between Shoal's roles (tracker,
// origin, build-index, agent): the HTTP paths and the functions that build
// them, the headers and content types, the JSON types, the OCI error body
// and codes, the name grammar, and typed clients that carry the one
// failover rule (try servers in the order given; a 4xx answer is final; a
// 5xx or a transport error moves on to the next).
//
// Servers register their routes with the Pattern constants; clients build
// URLs with the URL functions, so the two cannot drift apart. The package is
// a leaf: it imports no other Shoal package, and every role imports it.
package proto
