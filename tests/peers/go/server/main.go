// A minimal MCP server over Streamable HTTP with TLS (JSON responses),
// standard library only: the tests' Go peer for crypto/tls capture.
//
// Usage: server -port N [-cert C -key K] -name NAME (plain HTTP without a
// certificate)
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

type callParams struct {
	Name      string                     `json:"name"`
	Arguments map[string]json.RawMessage `json:"arguments"`
}

func text(s string, isError bool) map[string]any {
	return map[string]any{"content": []map[string]any{{"type": "text", "text": s}}, "isError": isError}
}

func main() {
	port := flag.Int("port", 0, "port")
	cert := flag.String("cert", "", "certificate")
	key := flag.String("key", "", "key")
	name := flag.String("name", "go-mcp-server", "server name")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
		case http.MethodDelete:
			w.WriteHeader(http.StatusOK)
			return
		default:
			// No server-initiated stream.
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var req request
		if err := json.Unmarshal(body, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if len(req.ID) == 0 {
			w.WriteHeader(http.StatusAccepted) // a notification
			return
		}
		var result any
		var rpcErr map[string]any
		switch req.Method {
		case "initialize":
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			w.Header().Set("Mcp-Session-Id", hex.EncodeToString(b))
			result = map[string]any{
				"protocolVersion": "2025-06-18",
				"capabilities":    map[string]any{"tools": map[string]any{}},
				"serverInfo":      map[string]any{"name": *name, "version": "1.0.0"},
			}
		case "ping":
			result = map[string]any{}
		case "tools/list":
			result = map[string]any{"tools": []map[string]any{
				{"name": "add", "inputSchema": map[string]any{"type": "object"}},
				{"name": "refuse", "inputSchema": map[string]any{"type": "object"}},
				{"name": "whoami", "inputSchema": map[string]any{"type": "object"}},
				{"name": "blob", "inputSchema": map[string]any{"type": "object"}},
			}}
		case "tools/call":
			var p callParams
			_ = json.Unmarshal(req.Params, &p)
			switch p.Name {
			case "add":
				var a, b float64
				_ = json.Unmarshal(p.Arguments["a"], &a)
				_ = json.Unmarshal(p.Arguments["b"], &b)
				result = text(fmt.Sprint(a+b), false)
			case "refuse":
				result = text("refused", true)
			case "blob":
				var mib float64
				_ = json.Unmarshal(p.Arguments["mib"], &mib)
				result = text(strings.Repeat("x", int(mib)<<20), false)
			case "whoami":
				result = map[string]any{
					"content":           []map[string]any{{"type": "text", "text": fmt.Sprint(os.Getpid())}},
					"structuredContent": map[string]any{"result": os.Getpid()},
					"isError":           false,
				}
			default:
				result = text("no such tool: "+p.Name, true)
			}
		default:
			rpcErr = map[string]any{"code": -32601, "message": "method not found"}
		}
		resp := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		if rpcErr != nil {
			resp["error"] = rpcErr
		} else {
			resp["result"] = result
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
	srv := &http.Server{
		Addr:    fmt.Sprintf("127.0.0.1:%d", *port),
		Handler: mux,
		// HTTP/1.1 only, like most MCP deployments behind a proxy (and
		// what mcptap parses; HTTP/2 is counted and left alone).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	if *cert == "" {
		// Plain HTTP (no certificate given).
		log.Fatal(srv.ListenAndServe())
	}
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}
