#!/bin/sh
# asterisk-agent: start-up of the Asterisk container.
#
# Renders three files into /etc/asterisk from the project's pristine copies (baked into the image under
# /usr/local/share/asterisk-agent/dialplan), on every start, so a changed variable takes effect on restart:
#   ari.conf   the [asterisk-agent] user's password      <- ARI_PASSWORD (required)
#   rtp.conf   rtpstart/rtpend                           <- RTP_START, RTP_END (must match the published range)
#   pjsip.conf NAT settings of [transport-udp]           <- EXTERNAL_ADDRESS, LOCAL_NET (both optional)
# then runs Asterisk in the foreground (-f) as the asterisk user, as PID 1, so `docker stop` reaches it.
set -eu

src=/usr/local/share/asterisk-agent/dialplan
etc=/etc/asterisk

fail() {
    echo "asterisk entrypoint: $*" >&2
    exit 2
}

# --- ARI password ------------------------------------------------------------------------------------
[ -n "${ARI_PASSWORD:-}" ] || fail "ARI_PASSWORD is not set: set it (the worker logs in with the same one)"
[ "$ARI_PASSWORD" != "change-me-ari-password" ] || fail "ARI_PASSWORD is still the sample's placeholder"
case "$ARI_PASSWORD" in
    *";"*) fail "ARI_PASSWORD must not contain ';' (it starts a comment in Asterisk's config files)" ;;
    [[:space:]]* | *[[:space:]]) fail "ARI_PASSWORD must not start or end with a space (Asterisk trims it)" ;;
esac
if [ "$(printf '%s' "$ARI_PASSWORD" | wc -l)" -ne 0 ]; then
    fail "ARI_PASSWORD must be a single line"
fi

# ENVIRON, not awk -v: the password reaches the file byte for byte (no backslash processing).
awk '
    /^\[/ { section = $0 }
    section == "[asterisk-agent]" && /^[ \t]*password[ \t]*=/ {
        print "password = " ENVIRON["ARI_PASSWORD"]; done = 1; next
    }
    { print }
    END { if (!done) exit 1 }
' "$src/ari.conf" > "$etc/ari.conf.new" || fail "no password line under [asterisk-agent] in ari.conf"
mv "$etc/ari.conf.new" "$etc/ari.conf"
chown root:asterisk "$etc/ari.conf"
chmod 0640 "$etc/ari.conf"

# --- RTP range ---------------------------------------------------------------------------------------
RTP_START=${RTP_START:-10000}
RTP_END=${RTP_END:-19999}
case "$RTP_START$RTP_END" in
    *[!0-9]*) fail "RTP_START and RTP_END must be port numbers" ;;
esac
[ "$RTP_START" -ge 1024 ] && [ "$RTP_END" -le 65535 ] && [ "$RTP_END" -gt "$RTP_START" ] \
    || fail "RTP range $RTP_START-$RTP_END is not a range of ports 1024-65535"
# icesupport=no and the other settings of rtp.conf stay as the project ships them.
sed -e "s/^rtpstart[ \t]*=.*/rtpstart = $RTP_START/" \
    -e "s/^rtpend[ \t]*=.*/rtpend = $RTP_END/" \
    "$src/rtp.conf" > "$etc/rtp.conf"
grep -q "^rtpstart = $RTP_START\$" "$etc/rtp.conf" && grep -q "^rtpend = $RTP_END\$" "$etc/rtp.conf" \
    || fail "rtp.conf has no rtpstart/rtpend lines to set"

# --- SIP behind Docker's NAT -------------------------------------------------------------------------
# Inside the container Asterisk only knows its container address; SIP peers outside the host must be
# told the host's address in SDP and Contact headers, or they send their audio nowhere.
EXTERNAL_ADDRESS=${EXTERNAL_ADDRESS:-}
LOCAL_NET=${LOCAL_NET:-}
case "$EXTERNAL_ADDRESS$LOCAL_NET" in
    *[!0-9A-Za-z.:/,\ -]*) fail "EXTERNAL_ADDRESS or LOCAL_NET holds an unexpected character" ;;
esac
awk '
    { print }
    $0 == "[transport-udp]" && ENVIRON["EXTERNAL_ADDRESS"] != "" {
        print "external_media_address = " ENVIRON["EXTERNAL_ADDRESS"]
        print "external_signaling_address = " ENVIRON["EXTERNAL_ADDRESS"]
        n = split(ENVIRON["LOCAL_NET"], nets, /[ ,]+/)
        for (i = 1; i <= n; i++) if (nets[i] != "") print "local_net = " nets[i]
    }
' "$src/pjsip.conf" > "$etc/pjsip.conf"

# --- run ---------------------------------------------------------------------------------------------
# The Debian package creates /run/asterisk at boot (tmpfiles.d), which no container runs.
install -d -o asterisk -g asterisk -m 0755 /var/run/asterisk

exec asterisk -f -U asterisk -G asterisk "$@"
