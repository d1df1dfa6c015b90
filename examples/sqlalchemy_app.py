"""A small shop on SQLAlchemy's ORM, written for SQLAlchemy's QueuePool.

16 worker threads place orders (each a transaction: take stock with a guarded
UPDATE, then the order and its lines through the ORM) and read customers'
histories and a sales report, through a pool of 4 connections (+2 overflow).
At the end the stock sold and the order lines must agree exactly.

    python examples/sqlalchemy_app.py [URL]     # default: sqlite:///shop.db

examples/sqlalchemy_app_fastpool.py is this program switched to fastpool's
FastPool: the same file but for the pool class (tests/integration/compat/
test_sqlalchemy_pool.py checks that, and runs both).
"""

from __future__ import annotations

import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import ForeignKey, Integer, String, create_engine, event, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SHOP_URL", "sqlite:///shop.db")
PRODUCTS, CUSTOMERS, STOCK = 20, 50, 1000
WORKERS, ORDERS_PER_WORKER = 16, int(os.environ.get("SHOP_ORDERS", "25"))


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "shop_product"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    price_cents: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)


class Customer(Base):
    __tablename__ = "shop_customer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    orders: Mapped[list[Order]] = relationship(back_populates="customer", order_by="Order.id")


class Order(Base):
    __tablename__ = "shop_order"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("shop_customer.id"))
    customer: Mapped[Customer] = relationship(back_populates="orders")
    lines: Mapped[list[OrderLine]] = relationship(back_populates="order",
                                                  cascade="all, delete-orphan")


class OrderLine(Base):
    __tablename__ = "shop_order_line"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_order.id"))
    order: Mapped[Order] = relationship(back_populates="lines")
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_product.id"))
    product: Mapped[Product] = relationship()
    quantity: Mapped[int] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(Integer)


engine = create_engine(URL, pool_size=4, max_overflow=2, pool_timeout=30,
                       pool_pre_ping=True)
Session = sessionmaker(engine)

if engine.dialect.name == "sqlite":
    @event.listens_for(engine, "connect")
    def _sqlite_for_threads(dbapi_conn: object, record: object) -> None:
        # Readers beside one writer (WAL), and writers queue instead of failing.
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()


def set_up() -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session.begin() as s:
        s.add_all(Product(id=i, name=f"product {i}", price_cents=100 + 7 * i, stock=STOCK)
                  for i in range(1, PRODUCTS + 1))
        s.add_all(Customer(id=i, name=f"customer {i}") for i in range(1, CUSTOMERS + 1))


def place_order(rng: random.Random) -> int:
    """One order of 1-3 products, in one transaction; returns the units sold."""
    wanted = {rng.randint(1, PRODUCTS): rng.randint(1, 5) for _ in range(rng.randint(1, 3))}
    with Session.begin() as s:
        lines = []
        for product_id, quantity in sorted(wanted.items()):
            # Write first (SQLite then never has to upgrade a read lock).
            taken = s.execute(update(Product)
                              .where(Product.id == product_id, Product.stock >= quantity)
                              .values(stock=Product.stock - quantity))
            if taken.rowcount == 1:
                product = s.get(Product, product_id)
                assert product is not None
                lines.append(OrderLine(product=product, quantity=quantity,
                                       price_cents=product.price_cents))
        if not lines:
            return 0
        customer = s.get(Customer, rng.randint(1, CUSTOMERS))
        s.add(Order(customer=customer, lines=lines))
        return sum(line.quantity for line in lines)


def history(customer_id: int) -> int:
    """What a customer spent, through the relationships (lazy loads)."""
    with Session() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        return sum(line.quantity * line.price_cents
                   for order in customer.orders for line in order.lines)


def best_customers() -> list[tuple[str, int]]:
    with Session() as s:
        spent = func.sum(OrderLine.quantity * OrderLine.price_cents)
        rows = s.execute(select(Customer.name, spent).join(Customer.orders).join(Order.lines)
                         .group_by(Customer.id, Customer.name)
                         .order_by(spent.desc(), Customer.id).limit(3))
        return [(name, int(total)) for name, total in rows]


def worker(seed: int) -> int:
    rng = random.Random(seed)
    sold = 0
    for i in range(ORDERS_PER_WORKER):
        sold += place_order(rng)
        if i % 5 == 0:
            history(rng.randint(1, CUSTOMERS))
            best_customers()
    return sold


def main() -> int:
    set_up()
    with ThreadPoolExecutor(WORKERS) as ex:
        sold = sum(ex.map(worker, range(WORKERS)))
    with Session() as s:
        left = s.scalar(select(func.sum(Product.stock)))
        in_lines = s.scalar(select(func.coalesce(func.sum(OrderLine.quantity), 0)))
        orders = s.scalar(select(func.count(Order.id)))
    spent = sum(history(c) for c in range(1, CUSTOMERS + 1))
    ok = left + sold == PRODUCTS * STOCK and in_lines == sold and spent > 0
    print(f"{orders} orders, {sold} units sold, {left} left; best customers: "
          f"{best_customers()}; {'consistent' if ok else 'INCONSISTENT'}")
    print(engine.pool.status())
    Base.metadata.drop_all(engine)
    engine.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
