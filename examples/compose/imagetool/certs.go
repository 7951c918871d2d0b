package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/fsutil"
	"github.com/shoal-dev/shoal/internal/tlsconf"
)

// certs writes what the compose swarm's TLS variant mounts: a CA (ca.crt),
// one certificate for every component (tls.crt, tls.key; server and client
// use, valid for --names), and an intruder certificate from another CA
// (intruder.crt, intruder.key) that every server must refuse. The files
// are world-readable: the containers run as a non-root user. For a test
// swarm only; real clusters get theirs from cert-manager or their own PKI.
func certs(args []string) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", "", "output directory")
	names := fs.String("names", "", "comma-separated DNS names and IP addresses of the certificate")
	rotate := fs.Bool("rotate", false, "issue a new tls.crt and tls.key from the CA already in --dir (a rotation)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *names == "" {
		return errors.New("--dir and --names are required")
	}
	if *rotate {
		ca, caKey, err := loadCA(*dir)
		if err != nil {
			return err
		}
		leaf, leafKey, err := newCert("shoal", strings.Split(*names, ","), ca, caKey)
		if err != nil {
			return err
		}
		// The key first: until the certificate follows, the pair does not
		// match and the servers keep the old one (as during any rotation).
		for _, f := range []struct {
			name string
			b    []byte
		}{{"tls.key", keyPEM(leafKey)}, {"tls.crt", certPEM(leaf)}} {
			if err := fsutil.WriteFileAtomicPerm(filepath.Join(*dir, f.name), f.b, 0o644); err != nil {
				return err
			}
		}
		fmt.Printf("rotated: serial %s\n", leaf.SerialNumber)
		return nil
	}
	ca, caKey, err := newCert("shoal-compose-ca", nil, nil, nil)
	if err != nil {
		return err
	}
	leaf, leafKey, err := newCert("shoal", strings.Split(*names, ","), ca, caKey)
	if err != nil {
		return err
	}
	other, otherKey, err := newCert("intruder-ca", nil, nil, nil)
	if err != nil {
		return err
	}
	intruder, intruderKey, err := newCert("intruder", []string{"intruder"}, other, otherKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": certPEM(ca), "tls.crt": certPEM(leaf), "tls.key": keyPEM(leafKey),
		"intruder.crt": certPEM(intruder), "intruder.key": keyPEM(intruderKey)}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*dir, name), b, 0o644); err != nil {
			return err
		}
	}
	// The CA's key stays beside it (owner-only) for --rotate.
	if err := os.WriteFile(filepath.Join(*dir, "ca.key"), keyPEM(caKey), 0o600); err != nil {
		return err
	}
	fmt.Printf("certificates for %s in %s\n", *names, *dir)
	return nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, fmt.Errorf("%s: ca.crt or ca.key is not PEM", dir)
	}
	ca, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	return ca, key, err
}

// serial prints the serial number of the certificate a TLS server presents
// (--addr), or of a PEM certificate file (--file).
func serial(args []string) error {
	fs := flag.NewFlagSet("serial", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of a TLS server")
	file := fs.String("file", "", "a PEM certificate file")
	cacert := fs.String("cacert", "", "CA bundle that verifies the server")
	cert := fs.String("cert", "", "client certificate (mutual TLS)")
	key := fs.String("key", "", "client certificate's key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		p, _ := pem.Decode(b)
		if p == nil {
			return fmt.Errorf("%s: not PEM", *file)
		}
		c, err := x509.ParseCertificate(p.Bytes)
		if err != nil {
			return err
		}
		fmt.Println(c.SerialNumber)
		return nil
	}
	src, err := tlsconf.New(tlsconf.Config{CA: *cacert, Cert: *cert, Key: *key}, "", nil)
	if err != nil {
		return err
	}
	if src == nil {
		return errors.New("--cacert is required with --addr")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := src.DialTLS((&net.Dialer{}).DialContext)(ctx, "tcp", *addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Println(conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber)
	return nil
}

// newCert makes a CA (parent nil) or a leaf for names signed by parent.
func newCert(cn string, names []string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour)}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
