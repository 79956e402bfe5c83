#!/bin/sh
# Gives every cross-region proxy of deploy/toxiproxy.json (xregion-<from region>-<backend>) its region pair's
# round-trip time as latency toxics, half on each direction, through Toxiproxy's HTTP API, as `meridian up`
# does. Run once by the `toxiproxy-latency` service of docker-compose.yml; safe to run again (an existing toxic
# is left as it is). tests/test_compose.py checks the figures against the RTTs of deploy/control-plane.yaml.
set -eu

API="${TOXIPROXY_URL:-http://toxiproxy:8474}"

# add_toxic PROXY STREAM LATENCY_MS
add_toxic() {
  body="{\"name\": \"latency_$2\", \"type\": \"latency\", \"stream\": \"$2\", \"toxicity\": 1.0,"
  body="$body \"attributes\": {\"latency\": $3, \"jitter\": 0}}"
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d "$body" "$API/proxies/$1/toxics")
  case "$status" in
    200) echo "toxiproxy-latency proxy=$1 stream=$2 latency_ms=$3" ;;
    409) echo "toxiproxy-latency proxy=$1 stream=$2 already=true" ;;
    *) echo "toxiproxy-latency proxy=$1 stream=$2 failed status=$status" >&2; exit 1 ;;
  esac
}

# add_latency PROXY UPSTREAM_MS DOWNSTREAM_MS
add_latency() {
  add_toxic "$1" upstream "$2"
  add_toxic "$1" downstream "$3"
}

add_latency xregion-eu-west-us-dense 40 40    # eu-west -> us-east: RTT 80 ms
add_latency xregion-ap-south-us-dense 100 100    # ap-south -> us-east: RTT 200 ms
add_latency xregion-eu-west-us-linear 40 40    # eu-west -> us-east: RTT 80 ms
add_latency xregion-ap-south-us-linear 100 100    # ap-south -> us-east: RTT 200 ms
add_latency xregion-us-east-eu-moe 40 40    # us-east -> eu-west: RTT 80 ms
add_latency xregion-ap-south-eu-moe 70 70    # ap-south -> eu-west: RTT 140 ms
add_latency xregion-us-east-eu-hybrid 40 40    # us-east -> eu-west: RTT 80 ms
add_latency xregion-ap-south-eu-hybrid 70 70    # ap-south -> eu-west: RTT 140 ms
add_latency xregion-us-east-ap-dense 100 100    # us-east -> ap-south: RTT 200 ms
add_latency xregion-eu-west-ap-dense 70 70    # eu-west -> ap-south: RTT 140 ms
add_latency xregion-us-east-ap-linear 100 100    # us-east -> ap-south: RTT 200 ms
add_latency xregion-eu-west-ap-linear 70 70    # eu-west -> ap-south: RTT 140 ms
