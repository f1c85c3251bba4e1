# Varnish in front of a static site, taking purgewatch's purges (target `type: varnish`).
#
#   mode: ban   — BAN / with the path-anchored regex in X-Ban-Regex (the header `ban_header`
#                 names): every cached object whose URL matches is banned.
#   mode: purge — PURGE <path>: that one object (every variant) is removed.
#
# Only the addresses in the `purgers` ACL may purge. Set the backend to your origin.
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "8080";
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (!req.http.X-Ban-Regex) {
            return (synth(400, "X-Ban-Regex missing"));
        }
        # The pattern is matched against the path (and query): purgewatch's patterns are tied
        # to the start of the path, with an optional scheme and host before it.
        ban("req.url ~ " + req.http.X-Ban-Regex);
        return (synth(200, "Banned"));
    }
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        return (purge);
    }
}
