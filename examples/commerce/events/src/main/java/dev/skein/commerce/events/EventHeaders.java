package dev.skein.commerce.events;

/** Kafka record headers every event carries (UTF-8 strings). */
public final class EventHeaders {
    /** The trace id: from the HTTP request's X-Trace-Id, or generated; every consumer logs it and passes it on. */
    public static final String TRACE_ID = "traceId";
    /** The event type, the same value as the body's "type". */
    public static final String EVENT_TYPE = "eventType";
    /** The HTTP request header the api reads the trace id from. */
    public static final String HTTP_TRACE_ID = "X-Trace-Id";

    private EventHeaders() {
    }
}
