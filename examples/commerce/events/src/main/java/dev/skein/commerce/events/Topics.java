package dev.skein.commerce.events;

/** Topic names shared by every app of the example (docs/commerce.md, "the contract"). */
public final class Topics {
    /** One topic for an order's whole life (order-created, payment-completed, order-shipped), keyed by order id. */
    public static final String ORDERS = "orders";
    /** Stock decrements, keyed by product id: one product's decrements are applied one at a time. */
    public static final String STOCK_REQUESTS = "stock-requests";
    /** Coupon admissions granted by Redis, keyed by user id. */
    public static final String COUPON_ADMISSIONS = "coupon-admissions";
    /** Partitions each topic is created with. */
    public static final int PARTITIONS = 6;

    private Topics() {
    }
}
