"""The drill's nginx configuration: deploy/nginx/caja.conf as shipped, with only what differs on this machine
swapped (listen ports on loopback, the certificate, the app ports, the log path), inside a minimal main
configuration. Each swap must apply exactly as expected, so a change to the shipped file cannot slip past.

    python nginx_conf.py deploy/nginx/caja.conf PREFIX HTTP_PORT HTTPS_PORT APP_PORT...
"""

import re
import sys
from pathlib import Path

source, prefix, http, https, *apps = sys.argv[1:]
conf = Path(source).read_text()
prefix = Path(prefix).resolve()


def swap(pattern: str, replacement: str, count: int) -> None:
    global conf
    conf, n = re.subn(pattern, replacement, conf, flags=re.M)
    if n != count:
        raise SystemExit(f"{source}: se esperaban {count} coincidencias de {pattern!r} y hubo {n}")


swap(r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{http};", 1)
swap(r"^\s*listen \[::\]:80;\n", "", 1)
swap(r"^(\s*)listen 443 ssl http2;$", rf"\1listen 127.0.0.1:{https} ssl http2;", 1)
swap(r"^\s*listen \[::\]:443 ssl http2;\n", "", 1)
swap(r"/etc/letsencrypt/live/caja\.example\.cl/", f"{prefix}/tls/", 2)
swap(r"/var/log/nginx/caja\.access\.log", f"{prefix}/logs/caja.access.log", 1)
servers = re.findall(r"server 127\.0\.0\.1:(\d+) ", conf)
if len(servers) != len(apps):
    raise SystemExit(f"{source}: el upstream tiene {len(servers)} instancias y el simulacro {len(apps)}")
for old, new in zip(servers, apps, strict=True):
    swap(rf"server 127\.0\.0\.1:{old} ", f"server 127.0.0.1:{new} ", 1)

(prefix / "caja.conf").write_text(conf)
(prefix / "nginx.conf").write_text(
    f"""user root;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/caja.conf;
}}
"""
)
