package dev.skein.commerce.events;

/** Values of the eventType header and of the body's "type". */
public final class EventTypes {
    public static final String ORDER_CREATED = "order-created";
    public static final String PAYMENT_COMPLETED = "payment-completed";
    public static final String ORDER_SHIPPED = "order-shipped";
    public static final String STOCK_REQUESTED = "stock-requested";
    public static final String COUPON_ADMITTED = "coupon-admitted";

    private EventTypes() {
    }
}
