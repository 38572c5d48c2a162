#!/usr/bin/env python3
# A minimal HTTPS endpoint for the transport's TLS test: answers HEAD and GET with 200 over
# keep-alive HTTP/1.1 using the certificate given. Prints "listening on 127.0.0.1:PORT"
# first. Only for tests on 127.0.0.1; never a server for anything else.
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"tls"')
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_HEAD(self):
        self.answer(b"")

    def do_GET(self):
        self.answer(b"over tls")


cert, key = sys.argv[1], sys.argv[2]
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
srv.serve_forever()
